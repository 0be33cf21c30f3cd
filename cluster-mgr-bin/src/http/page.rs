//! Answers of paginated lists: the JSON array of the page, plus `X-Next-Cursor: <id>` and
//! `Link: <same path and query with after=<id>>; rel="next"` when more rows follow.
//!
//! Invariant: the body shape of a list never changes with pagination (an array); a response
//! without the cursor header is the last page.

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use kunlun_meta::api::{Page, NEXT_CURSOR_HEADER};
use serde::Serialize;

/// 200 with the page's rows and, unless it is the last page, the cursor headers.
pub fn ok<T: Serialize>(req: &HttpRequest, page: Page<T>) -> HttpResponse {
    let mut res = with_cursor(req, page.next);
    res.json(page.items)
}

/// 200 with `body` (the page's rows, JSON) and the cursor headers of `next`.
pub fn answer(req: &HttpRequest, next: Option<i64>, body: Bytes) -> HttpResponse {
    with_cursor(req, next)
        .content_type("application/json")
        .body(body)
}

/// A 200 with, unless `next` is `None` (the last page), the cursor headers.
fn with_cursor(req: &HttpRequest, next: Option<i64>) -> HttpResponseBuilder {
    let mut res = HttpResponse::Ok();
    if let Some(next) = next {
        res.insert_header((NEXT_CURSOR_HEADER, next.to_string()));
        res.insert_header((
            actix_web::http::header::LINK,
            format!(
                "<{}?{}>; rel=\"next\"",
                req.path(),
                next_query(req.query_string(), next)
            ),
        ));
    }
    res
}

/// `query` with its `after` replaced by `next` (other keys kept as sent: they were accepted).
fn next_query(query: &str, next: i64) -> String {
    let mut parts: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("after="))
        .collect();
    let after = format!("after={next}");
    parts.push(&after);
    parts.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_keeps_the_filters_and_replaces_the_cursor() {
        assert_eq!(next_query("", 7), "after=7");
        assert_eq!(next_query("limit=5", 7), "limit=5&after=7");
        assert_eq!(
            next_query("status=done&after=90&limit=5", 42),
            "status=done&limit=5&after=42"
        );
    }
}
