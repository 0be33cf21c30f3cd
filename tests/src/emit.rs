//! [`Emit`]: a client of the KunlunBase-compatible job API `POST /HttpService/Emit` that talks
//! the way the original's test scripts and Kunlun-XPanel do (string-typed paras, HTTP/1.0 or
//! 1.1, `application/json` or `text/plain`), and checks the transport of every answer.
//!
//! Invariant: every answer this client hands back was HTTP 200 with `Content-Type: text/plain`,
//! `Access-Control-Allow-Origin: *` and a JSON object whose envelope fields (`version`,
//! `error_code`, `error_info`, `status`, `job_id`) are strings when present; anything else
//! panics with the request and the answer, so a test never reads a malformed answer.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::blocking::Client;
use reqwest::Version;
use serde_json::{json, Value};

/// The path of the job API.
pub const PATH: &str = "/HttpService/Emit";

/// The original's codes this client names (`cm:src/util_func/error_code.h`).
pub const OK: &str = "0";
/// Invalid request: body not JSON, no or unknown `job_type`, unsupported job type.
pub const INVALID_REQUEST: &str = "70001";
/// `get_status` of a job id that does not exist ("job_id no find").
pub const JOB_ID_NOT_FOUND: &str = "70104";

/// Seconds since the epoch as the original's clients send them: a string.
pub fn timestamp() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

/// The request envelope of `job_type` with `paras`.
pub fn envelope(job_type: &str, paras: Value) -> Value {
    json!({
        "version": "1.0",
        "job_id": "",
        "job_type": job_type,
        "timestamp": timestamp(),
        "user_name": "kunlun_test",
        "paras": paras,
    })
}

/// How a request is sent: HTTP version and `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1, `application/json`.
    Json11,
    /// HTTP/1.0, `application/json` (XPanel's PHP client: `CURLOPT_HTTP_VERSION = 1.0`).
    Json10,
    /// HTTP/1.1, `text/plain` (a client that does not label its body).
    Text11,
}

/// One answer: the HTTP status, the headers a browser client relies on, the JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub http_status: u16,
    pub content_type: String,
    pub allow_origin: Option<String>,
    pub allow_methods: Option<String>,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// A top-level string field of the body (`""` when absent or not a string).
    pub fn s(&self, key: &str) -> &str {
        self.body[key].as_str().unwrap_or("")
    }
}

/// A client of one daemon's `/HttpService/Emit`; see the module doc.
pub struct Emit {
    url: String,
    http: Client,
    /// Appended to every failure message (e.g. the daemon's log tail).
    context: Box<dyn Fn() -> String>,
}

impl Emit {
    /// A client of the daemon at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Emit {
        Emit {
            url: format!("{base}{PATH}"),
            http: Client::builder()
                // XPanel's timeout.
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            context: Box::new(String::new),
        }
    }

    /// Adds `context()` (called only on failure) to every failure message.
    pub fn with_context(mut self, context: impl Fn() -> String + 'static) -> Emit {
        self.context = Box::new(context);
        self
    }

    /// The failure context (the daemon's log tail when set).
    pub fn context(&self) -> String {
        (self.context)()
    }

    /// The full URL of the endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `body` as is and returns the answer without judging it.
    pub fn raw(&self, body: &str, wire: Wire) -> Answer {
        let (version, ctype) = match wire {
            Wire::Json11 => (Version::HTTP_11, "application/json"),
            Wire::Json10 => (Version::HTTP_10, "application/json"),
            Wire::Text11 => (Version::HTTP_11, "text/plain"),
        };
        let r = self
            .http
            .post(&self.url)
            .version(version)
            .header("content-type", ctype)
            .body(body.to_string())
            .send()
            .unwrap_or_else(|e| panic!("POST {PATH} {body}: {e}\n{}", self.context()));
        Self::answer(r)
    }

    /// `OPTIONS /HttpService/Emit` (a browser's pre-flight).
    pub fn options(&self) -> Answer {
        let r = self
            .http
            .request(reqwest::Method::OPTIONS, &self.url)
            .header("origin", "http://xpanel.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-private-network", "true")
            .send()
            .unwrap_or_else(|e| panic!("OPTIONS {PATH}: {e}\n{}", self.context()));
        Self::answer(r)
    }

    fn answer(r: reqwest::blocking::Response) -> Answer {
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let http_status = r.status().as_u16();
        let content_type = header("content-type").unwrap_or_default();
        let allow_origin = header("access-control-allow-origin");
        let allow_methods = header("access-control-allow-methods");
        let text = r.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            http_status,
            content_type,
            allow_origin,
            allow_methods,
            body,
            text,
        }
    }

    /// Sends `body` and checks the transport (see the module doc); returns the answer.
    pub fn send_body(&self, body: &Value, wire: Wire) -> Answer {
        let a = self.raw(&body.to_string(), wire);
        self.check_transport(&body.to_string(), &a);
        a
    }

    /// Panics unless `a` is an answer of the shape every Emit answer has.
    pub fn check_transport(&self, request: &str, a: &Answer) {
        let ctx = || format!("request {request}\nanswer {a:?}\n{}", self.context());
        assert_eq!(a.http_status, 200, "HTTP status: {}", ctx());
        assert!(
            a.content_type.starts_with("text/plain"),
            "Content-Type text/plain: {}",
            ctx()
        );
        assert_eq!(
            a.allow_origin.as_deref(),
            Some("*"),
            "Access-Control-Allow-Origin: {}",
            ctx()
        );
        assert!(a.body.is_object(), "a JSON object: {}", ctx());
        for key in ["version", "error_code", "error_info", "status", "job_id"] {
            let v = &a.body[key];
            assert!(
                v.is_null() || v.is_string(),
                "{key} is a string when present: {}",
                ctx()
            );
        }
        for key in ["error_code", "status"] {
            assert!(a.body[key].is_string(), "{key} present: {}", ctx());
        }
    }

    /// `job_type` with `paras` (HTTP/1.1, JSON): the checked answer.
    pub fn call(&self, job_type: &str, paras: Value) -> Answer {
        self.send_body(&envelope(job_type, paras), Wire::Json11)
    }

    /// `job_type` with `paras` sent as `wire`; must be accepted: returns the job id.
    pub fn accept_as(&self, job_type: &str, paras: Value, wire: Wire) -> String {
        let req = envelope(job_type, paras);
        let a = self.send_body(&req, wire);
        let ctx = || format!("request {req}\nanswer {}\n{}", a.text, self.context());
        assert_eq!(a.s("status"), "accept", "{}", ctx());
        assert_eq!(a.s("error_code"), OK, "{}", ctx());
        assert_eq!(a.s("error_info"), "", "{}", ctx());
        assert_eq!(a.s("version"), "1.0", "{}", ctx());
        assert!(a.body["attachment"].is_null(), "{}", ctx());
        let id = a.s("job_id").to_string();
        assert!(
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
            "job_id a decimal string: {}",
            ctx()
        );
        id
    }

    /// [`accept_as`](Self::accept_as) over HTTP/1.0 like XPanel.
    pub fn accept(&self, job_type: &str, paras: Value) -> String {
        self.accept_as(job_type, paras, Wire::Json10)
    }

    /// `get_status` of `job_id` as the original's tests send it (no `user_name`).
    pub fn status(&self, job_id: &str) -> Answer {
        let req = json!({
            "version": "1.0",
            "job_id": job_id,
            "job_type": "get_status",
            "timestamp": timestamp(),
            "paras": {},
        });
        self.send_body(&req, Wire::Json11)
    }

    /// Polls `get_status` of `job_id` until it is `done` or `failed` (panics after `limit`);
    /// returns the last answer and every status seen on the way.
    pub fn wait(&self, job_id: &str, limit: Duration) -> (Answer, Vec<String>) {
        let deadline = Instant::now() + limit;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let a = self.status(job_id);
            let st = a.s("status").to_string();
            if seen.last() != Some(&st) {
                seen.push(st.clone());
            }
            if st == "done" || st == "failed" {
                return (a, seen);
            }
            assert!(
                matches!(st.as_str(), "not_started" | "ongoing"),
                "job {job_id}: status {st:?} (statuses seen {seen:?}); answer {}\n{}",
                a.text,
                self.context()
            );
            assert!(
                Instant::now() < deadline,
                "job {job_id} still {st} after {limit:?}: {}\n{}",
                a.text,
                self.context()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Accepts `job_type` and waits for it; panics (with the context) unless it is `done`.
    pub fn run_done(&self, job_type: &str, paras: Value, limit: Duration) -> Answer {
        let req = paras.to_string();
        let id = self.accept(job_type, paras);
        let (a, seen) = self.wait(&id, limit);
        assert_eq!(
            (a.s("status"), a.s("error_code")),
            ("done", OK),
            "{job_type} {req} (job {id}, statuses {seen:?}): {}\n{}",
            a.text,
            self.context()
        );
        a
    }

    /// Accepts `job_type` and waits for it to fail: returns `(error_code, error_info)`.
    /// Panics when it is done instead, or fails without a code or a message.
    pub fn run_failed(&self, job_type: &str, paras: Value, limit: Duration) -> (String, String) {
        let req = paras.to_string();
        let id = self.accept(job_type, paras);
        let (a, _) = self.wait(&id, limit);
        let ctx = || {
            format!(
                "{job_type} {req} (job {id}): {}\n{}",
                a.text,
                self.context()
            )
        };
        assert_eq!(a.s("status"), "failed", "{}", ctx());
        assert_ne!(a.s("error_code"), OK, "a failure has a code: {}", ctx());
        assert!(!a.s("error_info").is_empty(), "and a message: {}", ctx());
        (a.s("error_code").to_string(), a.s("error_info").to_string())
    }
}
