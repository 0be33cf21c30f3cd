//! Failover records with their per-phase timelines, and XA branches in doubt.

use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ha::{FailoverRecord, Outcome};
use kunlun_core::ClusterManager;
use kunlun_meta::model::TxnCmd;
use maud::{html, Markup};
use serde::Deserialize;

use super::render::{api_form, badge, dur_ms, ts_utc, wire, Tone};
use super::{guard, respond, Ctx, Nav};
use crate::http::error::ApiError;
use crate::http::leader::Leading;

/// Records the failovers page shows.
const SHOWN: usize = 100;

#[derive(Deserialize)]
pub struct FailoverQuery {
    shard_id: Option<i64>,
}

#[derive(Deserialize)]
pub struct XaQuery {
    cluster_id: Option<i64>,
}

pub async fn failovers(
    req: HttpRequest,
    cm: web::Data<ClusterManager>,
    term: Option<Leading>,
    q: Option<web::Query<FailoverQuery>>,
) -> HttpResponse {
    let ctx = match guard(&req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let shard = q.and_then(|q| q.shard_id);
    let live = async {
        // One more than shown tells whether older ones follow.
        let all = match &term {
            Some(t) => t.failovers_page(shard, None, SHOWN + 1).await?,
            None => cm.failovers_page(shard, None, SHOWN + 1).await?,
        };
        Ok::<_, ApiError>(html! {
            @if all.is_empty() { p.empty { "No failovers or switchovers yet." } }
            @for r in all.iter().take(SHOWN) { (record(r, false)) }
            @if all.len() > SHOWN { p.note { "The " (SHOWN) " newest; the API pages through them all (" code { "GET /v1/failovers" } ")." } }
        })
    }
    .await;
    let title = match shard {
        Some(s) => format!("Failovers of shard {s}"),
        None => "Failovers".to_string(),
    };
    respond(&req, &ctx, &title, Nav::Failovers, html! {}, live, 3000)
}

pub async fn failover(
    req: HttpRequest,
    cm: web::Data<ClusterManager>,
    term: Option<Leading>,
    id: web::Path<u64>,
) -> HttpResponse {
    let ctx = match guard(&req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let live = async {
        let r = match &term {
            Some(t) => t.failover(*id).await?,
            None => cm.failover(*id).await?,
        };
        Ok::<_, ApiError>(record(&r, true))
    }
    .await;
    respond(
        &req,
        &ctx,
        &format!("Failover #{id}"),
        Nav::Failovers,
        html! { p { a href="/ui/failovers" { "All failovers" } } },
        live,
        5000,
    )
}

fn outcome(o: Outcome) -> Markup {
    let s = wire(&o);
    match o {
        Outcome::Promoted => badge(&s, Tone::Ok),
        Outcome::Refused => badge(&s, Tone::Warn),
        _ => badge(&s, Tone::Bad),
    }
}

/// One record: header, proof, fence, the old primary's fate, and the timeline as bars (the
/// script sizes each bar by its `data-ms`) with the same phases as a table.
fn record(r: &FailoverRecord, full: bool) -> Markup {
    let described: Vec<String> = r
        .phases
        .iter()
        .map(|p| format!("{} {}", p.name, dur_ms(p.ms)))
        .collect();
    let starts: Vec<u64> = r
        .phases
        .iter()
        .scan(0u64, |at, p| {
            let s = *at;
            *at += p.ms;
            Some(s)
        })
        .collect();
    html! {
        article.failover id={ "failover-" (r.id) } data-kind=(wire(&r.kind)) {
            header {
                h2 {
                    @if full { "#" (r.id) } @else { a href={ "/ui/failovers/" (r.id) } { "#" (r.id) } }
                    " " (wire(&r.kind)) " of shard " (r.shard_id) " "
                    span.muted { "(cluster " a href={ "/ui/clusters/" (r.cluster_id) } { (r.cluster_id) } ")" }
                }
                (outcome(r.outcome)) " "
                @if r.proven_lossless { (badge("proven lossless", Tone::Ok)) }
                @else if let Some(l) = &r.possible_loss { (badge("possible loss", Tone::Bad)) " " span.bad { (l) } }
                @else { (badge("no proof", Tone::Warn)) }
            }
            dl.facts {
                div { dt { "Started" } dd { (ts_utc(&r.started_at)) } }
                div { dt { "Total" } dd.total { (dur_ms(r.total_ms)) } }
                div { dt { "Old primary" } dd { "node " (r.old_primary) } }
                div { dt { "New primary" } dd { (r.new_primary.map_or_else(|| "—".into(), |n| format!("node {n}"))) } }
                div.wide { dt { "Fence" } dd { (r.fence.clone().unwrap_or_else(|| "—".into())) } }
                div { dt { "Old primary's fate" } dd { (r.old_primary_fate.clone().unwrap_or_else(|| "—".into())) } }
                @if let Some(why) = &r.reason { div.wide { dt { "Reason" } dd { (why) } } }
            }
            @if !r.phases.is_empty() {
                div.timeline role="img" aria-label={ "Timeline: " (described.join(", ")) } {
                    @for (i, p) in r.phases.iter().enumerate() {
                        div class={ "seg c" (i % 6) } data-ms=(p.ms) title={ (p.name) ": " (dur_ms(p.ms)) (p.note.as_ref().map(|n| format!(" — {n}")).unwrap_or_default()) } {
                            span.name { (p.name) } span.ms { (dur_ms(p.ms)) }
                        }
                    }
                }
                details open[full] {
                    summary { "Phases" }
                    div.table-wrap {
                        table.phases {
                            thead { tr { th { "Phase" } th { "Starts at" } th { "Took" } th { "Note" } } }
                            tbody {
                                @for (p, at) in r.phases.iter().zip(&starts) {
                                    tr {
                                        td { (p.name) } td { "+" (dur_ms(*at)) } td { (dur_ms(p.ms)) }
                                        td { (p.note.clone().unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !r.errant_followers.is_empty() {
                p.bad { "Kept out for rebuild (errant transactions): "
                    @for e in &r.errant_followers { "node " (e.node_id) " (" (e.gtids) ") " } }
            }
            @if !r.not_replicating.is_empty() {
                p.bad { "Not replicating after the switch: "
                    @for e in &r.not_replicating { "node " (e.node_id) ": " (e.why) "; " } }
            }
            @if !r.fence_unproven.is_empty() {
                p.bad { "Fence not proven: "
                    @for e in &r.fence_unproven { "node " (e.node_id) ": " (e.why) "; " } }
            }
        }
    }
}

pub async fn xa(
    req: HttpRequest,
    cm: web::Data<ClusterManager>,
    term: Option<Leading>,
    q: Option<web::Query<XaQuery>>,
) -> HttpResponse {
    let ctx = match guard(&req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let only = q.and_then(|q| q.cluster_id);
    let live = xa_live(&cm, term.as_ref(), only, &ctx).await;
    // Every refresh asks each shard primary of every cluster shown (`XA RECOVER`).
    let every = if only.is_some() { 5000 } else { 15000 };
    respond(&req, &ctx, "XA in doubt", Nav::Xa, html! {}, live, every)
}

async fn xa_live(
    cm: &ClusterManager,
    term: Option<&Leading>,
    only: Option<i64>,
    ctx: &Ctx,
) -> Result<Markup, ApiError> {
    let Some(term) = term else {
        return Ok(
            html! { p.note { "This instance does not lead: in-doubt branches are read by the leader." } },
        );
    };
    let clusters: Vec<(i64, String)> = match only {
        Some(id) => {
            let d = cm.cluster_detail(id).await?;
            vec![(id, d.cluster.name)]
        }
        None => cm
            .store()?
            .clusters_page(&kunlun_meta::api::PageQuery {
                limit: Some(super::overview::MAX_ROWS),
                after: None,
            })
            .await?
            .items
            .into_iter()
            .map(|c| (c.id, c.name))
            .collect(),
    };
    let mut out = Vec::new();
    for (id, name) in clusters {
        out.push((id, name, term.xa_in_doubt(id).await));
    }
    Ok(html! {
        p.hint { "Prepared branches of Kunlun's global transactions on each shard primary, with the decision logged in the cluster's commit log. The XA resolver ends them by that decision on its own; resolve by hand only what it cannot." }
        @if out.is_empty() { p.empty { "No clusters." } }
        @for (id, name, r) in &out {
            section.xa {
                h2 { "Cluster " a href={ "/ui/clusters/" (id) } { (name) } }
                @match r {
                    Err(e) => { p.error { (e.to_string()) } }
                    Ok(x) => {
                        @let total: usize = x.shards.iter().map(|s| s.branches.len()).sum();
                        @if total == 0 && x.shards.iter().all(|s| s.error.is_none()) {
                            p.empty.xa-none { "No branch in doubt." }
                        }
                        @for s in &x.shards {
                            @if let Some(e) = &s.error { p.error { "Shard " (s.shard_id) ": " (e) } }
                            @if s.foreign > 0 { p.note { "Shard " (s.shard_id) ": " (s.foreign) " prepared branches that are not Kunlun's (never touched)." } }
                            @if !s.branches.is_empty() {
                                h3 { "Shard " (s.shard_id) " " span.muted { (s.node.clone().unwrap_or_default()) } }
                                div.table-wrap {
                                    table.xa-branches {
                                        thead { tr { th { "XID" } th { "Age" } th { "Logged decision" } th { span.sr { "Resolve" } } } }
                                        tbody {
                                            @for b in &s.branches {
                                                tr {
                                                    td.gtid { (b.xid) }
                                                    td { (b.age_sec) " s" }
                                                    td { @match b.decision {
                                                        Some(TxnCmd::Commit) => { (badge("commit", Tone::Ok)) }
                                                        Some(TxnCmd::Abort) => { (badge("abort", Tone::Warn)) }
                                                        None => { (badge("none logged", Tone::Muted)) }
                                                    } }
                                                    td { (resolve_form(ctx, *id, s.shard_id, &b.xid, b.decision)) }
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
        }
    })
}

fn resolve_form(
    ctx: &Ctx,
    cluster: i64,
    shard: i64,
    xid: &str,
    decision: Option<TxnCmd>,
) -> Markup {
    let path = format!(
        "/v1/clusters/{cluster}/xa/{}/resolve",
        super::render::segment(xid)
    );
    // One global transaction has a branch on each shard it wrote: the ids name all three.
    let fid = format!(
        "xa-{cluster}-{shard}-{}",
        xid.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    api_form(
        ctx,
        "POST",
        &path,
        &format!(
            "End transaction {xid} as chosen? The API refuses what contradicts the commit log."
        ),
        "reload",
        html! {
            label for={ (fid) "-a" } { "Action" }
            select id={ (fid) "-a" } name="action" {
                option value="commit" selected[decision == Some(TxnCmd::Commit)] { "commit" }
                option value="rollback" selected[decision == Some(TxnCmd::Abort)] { "rollback" }
            }
            label for={ (fid) "-r" } { "Reason" }
            input id={ (fid) "-r" } name="reason" required maxlength="1024" autocomplete="off";
            button type="submit" { "Resolve" }
        },
    )
}
