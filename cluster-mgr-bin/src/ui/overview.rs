//! The overview page (clusters with health, HA alarms, leadership, machines) and the machines
//! page (probe facts, ports in use).

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ha::{HaStatus, NodeHealth, NodeState};
use kunlun_core::ClusterManager;
use kunlun_meta::api::PageQuery;
use kunlun_meta::model::{MachineInfo, NodeStats};
use maud::{html, Markup};

use super::render::{badge, ts, wire, Tone};
use super::{guard, respond, Ctx, Nav};
use crate::http::error::ApiError;
use crate::http::leader::Leading;
use crate::http::LeaderView;

/// Rows a console list shows at most (the API's page maximum).
pub const MAX_ROWS: u32 = 1000;

fn all() -> PageQuery {
    PageQuery {
        limit: Some(MAX_ROWS),
        after: None,
    }
}

/// A cluster's health from its nodes' probes and its shards' alarms.
pub fn health(nodes: &[&NodeHealth], alarms: usize) -> Markup {
    let down = nodes.iter().filter(|n| n.state == NodeState::Down).count();
    let suspect = nodes
        .iter()
        .filter(|n| n.state == NodeState::Suspect)
        .count();
    if alarms > 0 {
        badge(&format!("alarm ({alarms})"), Tone::Bad)
    } else if down > 0 {
        badge(&format!("{down} down"), Tone::Bad)
    } else if suspect > 0 {
        badge(&format!("{suspect} suspect"), Tone::Warn)
    } else if nodes.is_empty() {
        badge("not probed", Tone::Muted)
    } else {
        badge("healthy", Tone::Ok)
    }
}

pub fn node_state(s: NodeState) -> Markup {
    match s {
        NodeState::Up => badge("up", Tone::Ok),
        NodeState::Suspect => badge("suspect", Tone::Warn),
        NodeState::Down => badge("down", Tone::Bad),
    }
}

fn machine_state(s: NodeStats) -> Markup {
    match s {
        NodeStats::Running => badge("alive", Tone::Ok),
        NodeStats::Idle => badge("idle", Tone::Muted),
        NodeStats::Dead => badge("dead", Tone::Bad),
    }
}

/// Why the HA facts are missing on this instance: `ha` is this instance's HA status when it
/// leads (`None` when it does not), read once by the page.
pub fn ha_missing(ha: Option<&kunlun_core::Result<HaStatus>>) -> Option<Markup> {
    match ha {
        Some(Ok(_)) => None,
        Some(Err(e)) => {
            Some(html! { p.note { "Shard health is not known yet: " (e.to_string()) } })
        }
        None => Some(html! {
            p.note { "This instance does not lead: node health, alarms and XA are shown by the leader." }
        }),
    }
}

pub async fn page(
    req: HttpRequest,
    cm: web::Data<ClusterManager>,
    view: web::Data<LeaderView>,
    term: Option<Leading>,
) -> HttpResponse {
    let ctx = match guard(&req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let head = html! {
        @if ctx.can_operate() {
            p.actions { a.button href="/ui/clusters/new" #new-cluster { "Create cluster" } }
        }
    };
    let live = overview(&cm, &view, term.as_ref(), &ctx).await;
    respond(&req, &ctx, "Overview", Nav::Overview, head, live, 3000)
}

async fn overview(
    cm: &ClusterManager,
    view: &LeaderView,
    term: Option<&Leading>,
    _ctx: &Ctx,
) -> Result<Markup, ApiError> {
    let store = cm.store()?;
    let clusters = store.clusters_page(&all()).await?.items;
    let machines = store.machine_infos_page(&all()).await?.items;
    let ha_res = term.map(|t| t.ha_status());
    let ha = ha_res.as_ref().and_then(|r| r.as_ref().ok());
    let leader = view.info();
    let nodes: Vec<&NodeHealth> = ha.map_or(Vec::new(), |h| h.nodes.iter().collect());
    let count = |s: NodeState| nodes.iter().filter(|n| n.state == s).count();
    let alarms: BTreeMap<i64, String> = ha.map_or_else(BTreeMap::new, |h| h.alarms.clone());
    let dead = machines
        .iter()
        .filter(|m| m.machine.node_stats == NodeStats::Dead)
        .count();
    Ok(html! {
        section.cards aria-label="Summary" {
            div.card {
                h2 { "This instance" }
                p { (badge(&leader.role, if leader.role == "follower" { Tone::Muted } else { Tone::Info })) }
                dl {
                    dt { "Leader" } dd #leader { (leader.leader.clone().unwrap_or_else(|| "—".into())) }
                    dt { "Epoch" } dd #epoch { (leader.epoch.map_or_else(|| "—".into(), |e| e.to_string())) }
                }
            }
            div.card {
                h2 { "Storage nodes" }
                p.big { (nodes.len()) }
                p { (badge(&format!("{} up", count(NodeState::Up)), Tone::Ok)) " "
                    @if count(NodeState::Suspect) > 0 { (badge(&format!("{} suspect", count(NodeState::Suspect)), Tone::Warn)) " " }
                    @if count(NodeState::Down) > 0 { (badge(&format!("{} down", count(NodeState::Down)), Tone::Bad)) } }
            }
            div.card {
                h2 { "HA alarms" }
                p.big #alarm-count { (alarms.len()) }
            }
            div.card {
                h2 { "Machines" }
                p.big { (machines.len()) }
                p { @if dead > 0 { (badge(&format!("{dead} dead"), Tone::Bad)) } @else { (badge("all alive", Tone::Ok)) } }
            }
        }
        @if let Some(m) = ha_missing(ha_res.as_ref()) { (m) }
        h2 { "Clusters" }
        @if clusters.is_empty() {
            p.empty { "No clusters yet." }
        } @else {
            div.table-wrap {
                table #clusters {
                    thead { tr { th { "Id" } th { "Name" } th { "Health" } th { "Shards" } th { "Storage nodes" } th { "HA mode" } th { "Created" } } }
                    tbody {
                        @for c in &clusters {
                            @let mine: Vec<&NodeHealth> = nodes.iter().copied().filter(|n| n.cluster_id == c.id).collect();
                            @let shards: std::collections::BTreeSet<i64> = mine.iter().map(|n| n.shard_id).collect();
                            @let alarmed = shards.iter().filter(|s| alarms.contains_key(s)).count();
                            tr {
                                td { (c.id) }
                                td { a href={ "/ui/clusters/" (c.id) } { (c.name) } }
                                td { (health(&mine, alarmed)) }
                                td { (shards.len()) }
                                td { (mine.len()) }
                                td { (wire(&c.ha_mode)) }
                                td { (ts(c.when_created)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Open HA alarms" }
        @if alarms.is_empty() {
            p.empty #no-alarms { "None." }
        } @else {
            ul.alarms {
                @for (shard, why) in &alarms {
                    li { (badge("alarm", Tone::Bad)) " shard " (shard) ": " (why) }
                }
            }
        }
        h2 { "Machines" }
        (machine_table(&machines, false))
    })
}

fn machine_table(machines: &[MachineInfo], full: bool) -> Markup {
    if machines.is_empty() {
        return html! { p.empty { "No machines registered (" code { "kunlunctl machine add" } ")." } };
    }
    html! {
        div.table-wrap {
            table #machines {
                thead { tr {
                    th { "Id" } th { "Host" } th { "Type" } th { "State" } th { "Ports in use" }
                    @if full { th { "Port range" } th { "CPU / memory" } th { "SSH" } th { "Data dirs (free)" } th { "OS / kernel" } th { "Probed" } }
                } }
                tbody {
                    @for m in machines {
                        @let mm = &m.machine;
                        tr {
                            td { (mm.id) }
                            td { (mm.hostaddr) }
                            td { (wire(&mm.machine_type)) }
                            td { (machine_state(mm.node_stats)) }
                            td {
                                (mm.used_ports.len())
                                @if !mm.installing_ports.is_empty() { " (+" (mm.installing_ports.len()) " installing)" }
                                @if full && !mm.used_ports.is_empty() {
                                    div.small { (mm.used_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")) }
                                }
                            }
                            @if full {
                                td { (mm.port_range) }
                                td { (mm.total_cpu_cores.map_or_else(|| "—".into(), |c| format!("{c} cores"))) " / "
                                     (mm.total_mem_mb.map_or_else(|| "—".into(), |m| format!("{m} MB"))) }
                                td { (mm.ssh.user) "@" (mm.hostaddr) ":" (mm.ssh.port) }
                                td {
                                    @match &m.probe {
                                        Some(p) => { @for d in &p.data_dirs { div { (d.path) " " (d.free_mb.map_or_else(|| "?".into(), |f| format!("({f} MB free)"))) } } }
                                        None => { @for d in &mm.data_dirs { div { (d) } } }
                                    }
                                }
                                td { @if let Some(p) = &m.probe { (p.os) " / " (p.kernel) } @else { "not probed" } }
                                td { (ts(m.probe.as_ref().map(|p| p.probed_at))) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn machines(req: HttpRequest, cm: web::Data<ClusterManager>) -> HttpResponse {
    let ctx = match guard(&req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let live = async {
        let list = cm.store()?.machine_infos_page(&all()).await?.items;
        Ok::<_, ApiError>(machine_table(&list, true))
    }
    .await;
    respond(&req, &ctx, "Machines", Nav::Machines, html! {}, live, 5000)
}
