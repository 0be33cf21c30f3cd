//! Small pieces the console's pages share: badges, times, action buttons, error boxes.

use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup};
use serde_json::Value;

use super::Ctx;
use crate::http::error::ApiError;

/// The colour of a badge.
#[derive(Clone, Copy)]
pub enum Tone {
    Ok,
    Warn,
    Bad,
    Info,
    Muted,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Ok => "badge ok",
            Tone::Warn => "badge warn",
            Tone::Bad => "badge bad",
            Tone::Info => "badge info",
            Tone::Muted => "badge muted",
        }
    }
}

pub fn badge(text: &str, tone: Tone) -> Markup {
    html! { span class=(tone.class()) { (text) } }
}

/// A job's status as a badge.
pub fn job_status(s: &str) -> Markup {
    let tone = match s {
        "done" => Tone::Ok,
        "failed" => Tone::Bad,
        "ongoing" => Tone::Info,
        _ => Tone::Muted,
    };
    badge(s, tone)
}

pub fn ts(t: Option<NaiveDateTime>) -> String {
    t.map_or_else(
        || "—".to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

pub fn ts_utc(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// `1.2 s`, `340 ms`, `3 min 4 s`.
pub fn dur_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// The error of a failed read, as the API would have said it.
pub fn error_box(e: &ApiError) -> Markup {
    html! {
        div.error role="alert" {
            strong { (e.code) } ": " (e.message)
        }
    }
}

/// A button that calls the REST API (see `console.js`): shown only to a session that may
/// operate; `confirm` is asked first; `then` says where to go after (`job`: the started job's
/// page, `failover`: the record's page, `reload`: this page).
pub struct Action<'a> {
    pub label: &'a str,
    pub method: &'a str,
    pub path: String,
    pub confirm: String,
    pub then: &'a str,
    pub danger: bool,
    /// The JSON body, if any.
    pub body: Option<String>,
}

/// An [`Action`] with no body.
pub fn act<'a>(
    label: &'a str,
    method: &'a str,
    path: String,
    confirm: String,
    then: &'a str,
    danger: bool,
) -> Action<'a> {
    Action {
        label,
        method,
        path,
        confirm,
        then,
        danger,
        body: None,
    }
}

impl Action<'_> {
    /// The same action sending `json`.
    pub fn with_body(mut self, json: String) -> Self {
        self.body = Some(json);
        self
    }

    pub fn render(&self, ctx: &Ctx) -> Markup {
        if !ctx.can_operate() {
            return html! {};
        }
        html! {
            button type="button" class=(if self.danger { "act danger" } else { "act" })
                data-api-method=(self.method) data-api-path=(self.path)
                data-confirm=(self.confirm) data-then=(self.then)
                data-api-body=[self.body.as_deref()] { (self.label) }
        }
    }
}

/// A small form that calls the REST API with its fields as a JSON body (see `console.js`):
/// fields with `data-type="int"` are sent as numbers, empty optional ones are left out.
pub fn api_form(
    ctx: &Ctx,
    method: &str,
    path: &str,
    confirm: &str,
    then: &str,
    body: Markup,
) -> Markup {
    if !ctx.can_operate() {
        return html! {};
    }
    html! {
        form.api data-api-method=(method) data-api-path=(path) data-confirm=(confirm)
            data-then=(then) novalidate {
            (body)
            p.api-error role="alert" hidden {}
        }
    }
}

/// The wire name of a state enum (`"rbr"`, `"active"`), as the API spells it.
pub fn wire<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

/// Percent-encodes one path segment: everything but RFC 3986's unreserved characters, so a
/// value can never add a segment (`/`) or climb one (`..`).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Percent-encodes a query value (a console path as `next=` keeps its slashes).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_urls_read_well() {
        assert_eq!(dur_ms(340), "340 ms");
        assert_eq!(dur_ms(1234), "1.2 s");
        assert_eq!(dur_ms(184_000), "3 min 4 s");
        assert_eq!(
            url_encode("/ui/jobs?status=done&x"),
            "/ui/jobs%3Fstatus%3Ddone%26x"
        );
    }

    #[test]
    fn outside_text_is_escaped() {
        let m = badge("<script>x</script>", Tone::Ok).into_string();
        assert!(m.contains("&lt;script&gt;"), "{m}");
    }
}
