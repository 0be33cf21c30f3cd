//! Jobs: the list with filters, and one job with its steps (live until it ends).

use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::JobQuery;
use kunlun_meta::model::Job;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::render::{badge, dur_ms, job_status, ts, url_encode, Tone};
use super::{guard, respond, Nav};
use crate::http::error::ApiError;

/// Jobs one page of the list shows.
const PAGE: u32 = 50;

/// The list's filters, as the form sends them (empty means any).
#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    job_type: String,
    after: Option<i64>,
}

const STATUSES: [&str; 4] = ["not_started", "ongoing", "done", "failed"];

fn query(q: &ListQuery) -> Result<JobQuery, ApiError> {
    let status = match q.status.as_str() {
        "" => None,
        s => Some(
            serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
                ApiError::invalid_field(format!(
                    "status: {s:?} is not one of {}",
                    STATUSES.join(", ")
                ))
            })?,
        ),
    };
    let jq = JobQuery {
        status,
        job_type: (!q.job_type.trim().is_empty()).then(|| q.job_type.trim().to_string()),
        limit: Some(PAGE),
        after: q.after,
    };
    jq.validate().map_err(ApiError::from)?;
    Ok(jq)
}

pub async fn list(
    req: HttpRequest,
    cm: web::Data<ClusterManager>,
    q: Result<web::Query<ListQuery>, actix_web::Error>,
) -> HttpResponse {
    let ctx = match guard(&req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = q.map(web::Query::into_inner);
    let shown = q.as_ref().map_or_else(
        |_| ListQuery::default(),
        |q| ListQuery {
            status: q.status.clone(),
            job_type: q.job_type.clone(),
            after: q.after,
        },
    );
    let head = html! {
        form.filters method="get" action="/ui/jobs" role="search" {
            label for="f-status" { "Status" }
            select #f-status name="status" {
                option value="" { "any" }
                @for s in STATUSES { option value=(s) selected[shown.status == s] { (s) } }
            }
            label for="f-type" { "Type" }
            input #f-type name="job_type" value=(shown.job_type) placeholder="e.g. create_cluster" maxlength="64";
            button type="submit" { "Filter" }
        }
    };
    let live = async {
        let q = q.map_err(|e| ApiError::invalid_field(format!("bad filter: {e}")))?;
        let jq = query(&q)?;
        let page = cm.store()?.jobs_page(&jq).await?;
        Ok::<_, ApiError>(html! {
            @if page.items.is_empty() { p.empty { "No jobs match." } } @else {
                div.table-wrap {
                    table #jobs {
                        thead { tr { th { "Id" } th { "Type" } th { "Status" } th { "By" } th { "Started" } th { "Ended" } th { "Took" } } }
                        tbody {
                            @for j in &page.items {
                                tr {
                                    td { a href={ "/ui/jobs/" (j.id) } { (j.id) } }
                                    td { (j.job_type) }
                                    td { (job_status(&super::render::wire(&j.status))) }
                                    td { (j.user_name.clone().unwrap_or_default()) }
                                    td { (ts(j.when_started)) }
                                    td { (ts(j.when_ended)) }
                                    td { (took(j)) }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = page.next {
                p { a href={ "/ui/jobs?status=" (url_encode(&q.status)) "&job_type=" (url_encode(q.job_type.trim())) "&after=" (next) } { "Older jobs →" } }
            }
        })
    }
    .await;
    respond(&req, &ctx, "Jobs", Nav::Jobs, head, live, 3000)
}

fn took(j: &Job) -> String {
    match (j.when_started, j.when_ended) {
        (Some(a), Some(b)) => dur_ms(u64::try_from((b - a).num_milliseconds()).unwrap_or(0)),
        _ => "—".into(),
    }
}

pub async fn show(
    req: HttpRequest,
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
) -> HttpResponse {
    let ctx = match guard(&req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let job = cm.get_job(*id).await;
    // A finished job no longer changes: no refresh.
    let refresh = match &job {
        Ok(j) if !j.status.is_final() => 1000,
        _ => 0,
    };
    let live = job.map(|j| job_view(&j)).map_err(ApiError::from);
    respond(
        &req,
        &ctx,
        &format!("Job #{id}"),
        Nav::Jobs,
        html! { p { a href="/ui/jobs" { "All jobs" } } },
        live,
        refresh,
    )
}

fn job_view(j: &Job) -> Markup {
    let status = super::render::wire(&j.status);
    let memo = j.memo.clone().unwrap_or(Value::Null);
    let steps = memo["steps"].as_array().cloned().unwrap_or_default();
    let error = memo["error"].as_str().map(str::to_string);
    html! {
        dl.facts {
            div { dt { "Type" } dd #job-type { (j.job_type) } }
            div { dt { "Status" } dd #job-status data-status=(status) { (job_status(&status)) } }
            div { dt { "By" } dd { (j.user_name.clone().unwrap_or_else(|| "—".into())) } }
            div { dt { "Started" } dd { (ts(j.when_started)) } }
            div { dt { "Ended" } dd { (ts(j.when_ended)) } }
            div { dt { "Took" } dd { (took(j)) } }
        }
        @if let Some(e) = error { div.error #job-error role="alert" { (e) } }
        h2 { "Steps" }
        @if steps.is_empty() { p.empty { "No steps recorded yet." } } @else {
            div.table-wrap {
                table #steps {
                    thead { tr { th { "#" } th { "Step" } th { "Status" } th { "Took" } th { "Note" } } }
                    tbody {
                        @for (i, s) in steps.iter().enumerate() {
                            @let st = s["status"].as_str().unwrap_or("?");
                            tr data-status=(st) {
                                td { (i + 1) }
                                td { (s["name"].as_str().unwrap_or("?")) }
                                td { (badge(st, match st { "done" => Tone::Ok, "failed" => Tone::Bad, "running" => Tone::Info, _ => Tone::Muted })) }
                                td { (s["ms"].as_u64().map(dur_ms).unwrap_or_default()) }
                                td { (s["note"].as_str().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        details {
            summary { "Request and result (JSON)" }
            h3 { "Request" }
            pre { (serde_json::to_string_pretty(&j.job_info).unwrap_or_default()) }
            h3 { "Result" }
            pre { (serde_json::to_string_pretty(&without_steps(memo)).unwrap_or_default()) }
        }
    }
}

fn without_steps(mut memo: Value) -> Value {
    if let Some(o) = memo.as_object_mut() {
        o.remove("steps");
    }
    memo
}
