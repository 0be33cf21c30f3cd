//! The cluster page (shards with their nodes, roles, replication threads, lag, GTID,
//! semi-sync; compute nodes; actions) and the create-cluster form.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ha::NodeHealth;
use kunlun_core::ClusterManager;
use kunlun_meta::api::{ShardDetail, MAX_COMPS, MAX_NODES, MAX_SHARDS};
use kunlun_meta::model::{MemberState, ShardNode};
use maud::{html, Markup};

use super::overview::{ha_missing, health, node_state};
use super::render::{act, api_form, badge, ts, wire, Tone};
use super::{guard, respond, Ctx, Nav};
use crate::http::error::ApiError;
use crate::http::leader::Leading;

pub async fn page(
    req: HttpRequest,
    cm: web::Data<ClusterManager>,
    term: Option<Leading>,
    id: web::Path<i64>,
) -> HttpResponse {
    let ctx = match guard(&req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = *id;
    let name = match cm.cluster_detail(id).await {
        Ok(d) => d.cluster.name,
        Err(e) => {
            let live = Err(ApiError::from(e));
            let title = format!("Cluster #{id}");
            return respond(&req, &ctx, &title, Nav::Overview, html! {}, live, 0);
        }
    };
    let head = html! {
        p.actions {
            a href={ "/ui/xa?cluster_id=" (id) } { "XA in doubt" } " · "
            a href={ "/ui/failovers" } { "Failovers" } " · "
            a href="/ui/jobs" { "Jobs" }
            @if ctx.can_operate() {
                " "
                (act("Delete cluster", "DELETE", format!("/v1/clusters/{id}"),
                        format!("Delete cluster {name} (id {id})? Its servers are stopped and their data removed."), "job", true).render(&ctx))
            }
        }
        @if ctx.can_operate() {
            details.forms {
                summary { "Add shards or compute nodes" }
                div.row {
                    (api_form(&ctx, "POST", &format!("/v1/clusters/{id}/shards"),
                        "Add the shards?", "job", html! {
                        h3 { "Add shards" }
                        label for="add-shards" { "Shards" }
                        input #add-shards name="shards" type="number" min="1" max=(MAX_SHARDS) value="1" data-type="int" required;
                        label for="add-shard-nodes" { "Nodes per shard" }
                        input #add-shard-nodes name="nodes" type="number" min="1" max=(MAX_NODES) value="3" data-type="int" required;
                        button type="submit" { "Add shards" }
                    }))
                    (api_form(&ctx, "POST", &format!("/v1/clusters/{id}/comp_nodes"),
                        "Add the compute nodes?", "job", html! {
                        h3 { "Add compute nodes" }
                        label for="add-comps" { "Compute nodes" }
                        input #add-comps name="comps" type="number" min="1" max=(MAX_COMPS) value="1" data-type="int" required;
                        button type="submit" { "Add compute nodes" }
                    }))
                }
            }
        }
    };
    let live = live(&cm, term.as_ref(), id, &ctx).await;
    respond(
        &req,
        &ctx,
        &format!("Cluster {name}"),
        Nav::Overview,
        head,
        live,
        3000,
    )
}

async fn live(
    cm: &ClusterManager,
    term: Option<&Leading>,
    id: i64,
    ctx: &Ctx,
) -> Result<Markup, ApiError> {
    let d = cm.cluster_detail(id).await?;
    let ha_res = term.map(|t| t.ha_status());
    let ha = ha_res.as_ref().and_then(|r| r.as_ref().ok());
    let by_node: HashMap<i64, &NodeHealth> = ha
        .as_ref()
        .map(|h| h.nodes.iter().map(|n| (n.node_id, n)).collect())
        .unwrap_or_default();
    let c = &d.cluster;
    Ok(html! {
        dl.facts {
            div { dt { "Id" } dd { (c.id) } }
            div { dt { "Status" } dd { (wire(&c.status)) } }
            div { dt { "HA mode" } dd { (wire(&c.ha_mode)) } }
            div { dt { "Created" } dd { (ts(c.when_created)) } }
            div { dt { "Shards" } dd { (d.shards.len()) } }
            div { dt { "Compute nodes" } dd { (d.comp_nodes.len()) } }
        }
        @if let Some(m) = ha_missing(ha_res.as_ref()) { (m) }
        @for s in &d.shards {
            (shard(s, &by_node, ha.and_then(|h| h.alarms.get(&s.shard.id)), ctx))
        }
        h2 { "Compute nodes" }
        @if d.comp_nodes.is_empty() {
            p.empty { "None." }
        } @else {
            div.table-wrap {
                table #comp-nodes {
                    thead { tr { th { "Id" } th { "Name" } th { "Address" } th { "Status" } th { "Max connections" } th { "Created" } th { span.sr { "Actions" } } } }
                    tbody {
                        @for n in &d.comp_nodes {
                            tr {
                                td { (n.id) } td { (n.name) } td { (n.hostaddr) ":" (n.port) }
                                td { (wire(&n.status)) } td { (n.max_conns) } td { (ts(n.when_created)) }
                                td.acts {
                                    (act("Restart", "POST", format!("/v1/instances/{}:{}/restart", n.hostaddr, n.port),
                        format!("Restart compute node {} ({}:{})?", n.name, n.hostaddr, n.port), "job", false).render(ctx))
                                    (act("Remove", "DELETE", format!("/v1/clusters/{}/comp_nodes/{}", c.id, n.id),
                        format!("Remove compute node {} ({}:{})? Its server is stopped and its data removed.", n.name, n.hostaddr, n.port), "job", true).render(ctx))
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

fn is_primary(n: &ShardNode, h: Option<&&NodeHealth>) -> bool {
    h.map_or(n.member_state == MemberState::Source, |h| h.is_primary)
}

fn shard(
    s: &ShardDetail,
    by_node: &HashMap<i64, &NodeHealth>,
    alarm: Option<&String>,
    ctx: &Ctx,
) -> Markup {
    let sh = &s.shard;
    let healths: Vec<&NodeHealth> = s
        .nodes
        .iter()
        .filter_map(|n| by_node.get(&n.id).copied())
        .collect();
    html! {
        section.shard id={ "shard-" (sh.id) } aria-labelledby={ "shard-title-" (sh.id) } {
            div.shard-head {
                h2 id={ "shard-title-" (sh.id) } { "Shard " (sh.name) " " span.muted { "(id " (sh.id) ")" } }
                (health(&healths, usize::from(alarm.is_some())))
                span.acts {
                    (act("Switch over", "POST", format!("/v1/shards/{}/switchover", sh.id),
                        format!("Switch shard {} over to its best replica? Writes pause for about a second.", sh.name), "failover", false).render(ctx))
                    (act("Add replica", "POST", format!("/v1/clusters/{}/shards/{}/nodes", sh.db_cluster_id, sh.id),
                        format!("Add one replica to shard {}?", sh.name), "job", false).with_body("{\"nodes\":1}".into()).render(ctx))
                    (act("Remove shard", "DELETE", format!("/v1/clusters/{}/shards/{}", sh.db_cluster_id, sh.id),
                        format!("Remove shard {} and all its data?", sh.name), "job", true).render(ctx))
                }
            }
            @if let Some(a) = alarm { p.error role="alert" { "Alarm: " (a) } }
            @if ctx.can_operate() {
                (api_form(ctx, "POST", &format!("/v1/shards/{}/no_switch", sh.id),
                    &format!("Change the automatic-failover hold of shard {}?", sh.name), "reload", html! {
                    label for={ "hold-" (sh.id) } { "Hold automatic failover for (seconds, 0 lifts it)" }
                    input id={ "hold-" (sh.id) } name="seconds" type="number" min="0" max="604800" value="0" data-type="int" required;
                    button type="submit" { "Set hold" }
                }))
            }
            div.table-wrap {
                table.nodes {
                    thead { tr {
                        th { "Node" } th { "Address" } th { "Role" } th { "Health" } th { "Writes" }
                        th { "Replication (IO / SQL)" } th { "Lag" } th { "GTID" } th { "Semi-sync" } th { span.sr { "Actions" } }
                    } }
                    tbody {
                        @for n in &s.nodes {
                            @let h = by_node.get(&n.id);
                            @let primary = is_primary(n, h);
                            tr data-node=(n.id) data-role=(if primary { "primary" } else { "replica" }) {
                                td { (n.id) }
                                td { (n.hostaddr) ":" (n.port) }
                                td { @if primary { (badge("primary", Tone::Info)) } @else { "replica" }
                                     @if n.status != kunlun_meta::model::NodeStatus::Active { " " (badge(&wire(&n.status), Tone::Muted)) } }
                                td { @match h { Some(h) => { (node_state(h.state)) }, None => { (badge("not probed", Tone::Muted)) } } }
                                @match h.map(|h| &h.probe) {
                                    Some(p) if p.reachable => {
                                        td { @if p.read_only { "read-only" } @else { (badge("writable", if primary { Tone::Ok } else { Tone::Bad })) } }
                                        td {
                                            @if p.channels.is_empty() { @if primary { "—" } @else { (badge("no channel", Tone::Bad)) } }
                                            @for ch in &p.channels {
                                                div {
                                                    (badge(&ch.io_running, if ch.io_connected() { Tone::Ok } else { Tone::Bad }))
                                                    " / "
                                                    (badge(if ch.sql_running { "Yes" } else { "No" }, if ch.sql_running { Tone::Ok } else { Tone::Bad }))
                                                    " from " (ch.master_host) ":" (ch.master_port)
                                                    @if let Some(e) = ch.sql_error() { div.small.bad { (e) } }
                                                    @if !ch.last_io_error.is_empty() && !ch.io_connected() { div.small.bad { (ch.last_io_error) } }
                                                }
                                            }
                                        }
                                        td { @for ch in &p.channels { (ch.seconds_behind.map_or_else(|| "—".into(), |s| format!("{s} s"))) } }
                                        td.gtid { (p.gtid_current_pos.clone().filter(|g| !g.is_empty()).unwrap_or_else(|| "—".into())) }
                                        td { @if primary {
                                                @if p.semi_sync_master_active { (badge("on", Tone::Ok)) } @else if p.semi_sync_master_enabled { (badge("enabled, not active", Tone::Warn)) } @else { "off" }
                                                " " (p.semi_sync_clients) " acking"
                                             } @else { "—" } }
                                    }
                                    Some(p) => {
                                        td colspan="5" { span.bad { "unreachable: " (p.error.clone().unwrap_or_default()) } }
                                    }
                                    None => { td colspan="5" { span.muted { "no probe yet" } } }
                                }
                                td.acts {
                                    @if !primary {
                                        (act("Promote", "POST", format!("/v1/shards/{}/switchover", sh.id),
                        format!("Switch shard {} over to node {} ({}:{})?", sh.name, n.id, n.hostaddr, n.port), "failover", false).with_body(format!("{{\"target_node_id\":{}}}", n.id)).render(ctx))
                                        (act("Rebuild", "POST", format!("/v1/instances/{}:{}/rebuild", n.hostaddr, n.port),
                        format!("Rebuild replica {}:{} from a fresh copy?", n.hostaddr, n.port), "job", false).render(ctx))
                                        (act("Remove", "DELETE", format!("/v1/clusters/{}/shards/{}/nodes/{}", sh.db_cluster_id, sh.id, n.id),
                        format!("Remove replica {}:{} and its data?", n.hostaddr, n.port), "job", true).render(ctx))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The create-cluster form (validation messages come from the API).
pub async fn new_form(req: HttpRequest) -> HttpResponse {
    let ctx = match guard(&req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let head = if ctx.can_operate() {
        api_form(
            &ctx,
            "POST",
            "/v1/clusters",
            "Create this cluster? Its servers are installed on the registered machines.",
            "job",
            html! {
                div.grid {
                    label for="c-name" { "Name" }
                    input #c-name name="name" required maxlength="64" autocomplete="off" aria-describedby="c-name-help";
                    span #c-name-help .hint { "Letters, digits and _; unique." }
                    label for="c-nick" { "Nickname (optional)" }
                    input #c-nick name="nick_name" maxlength="128" autocomplete="off";
                    span {}
                    label for="c-ha" { "HA mode" }
                    select #c-ha name="ha_mode" { option value="rbr" selected { "rbr (GTID replication, semi-sync)" } option value="no_rep" { "no_rep (single node)" } }
                    span {}
                    label for="c-shards" { "Shards" }
                    input #c-shards name="shards" type="number" min="1" max=(MAX_SHARDS) value="1" data-type="int" required;
                    span {}
                    label for="c-nodes" { "Nodes per shard" }
                    input #c-nodes name="nodes" type="number" min="1" max=(MAX_NODES) value="3" data-type="int" required;
                    span {}
                    label for="c-comps" { "Compute nodes" }
                    input #c-comps name="comps" type="number" min="1" max=(MAX_COMPS) value="1" data-type="int" required;
                    span {}
                    label for="c-innodb" { "InnoDB buffer pool (MB, optional)" }
                    input #c-innodb name="innodb_size_mb" type="number" min="1" data-type="int";
                    span {}
                    label for="c-maxconn" { "Max connections (optional)" }
                    input #c-maxconn name="max_connections" type="number" min="1" data-type="int";
                    span {}
                }
                button type="submit" #create { "Create cluster" }
            },
        )
    } else {
        html! { p.note { "Your token's role (" (ctx.session.role) ") may not create clusters." } }
    };
    respond(
        &req,
        &ctx,
        "Create cluster",
        Nav::Overview,
        head,
        Ok(html! {}),
        0,
    )
}
