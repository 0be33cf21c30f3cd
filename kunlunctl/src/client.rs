//! HTTP access to the daemon and the one error type of the CLI.
//!
//! Every failure ends up as a [`CliError`] whose [`CliError::exit_code`] is the documented exit
//! code: 1 for anything the API (or the same validation done locally) refused and for a followed
//! job that failed, 3 when the daemon could not be reached or did not answer, or a followed job
//! did not end in time. Usage errors (2) never get here: clap handles them.

use std::path::PathBuf;
use std::time::Duration;

use kunlun_meta::api::ErrorBody;
use kunlun_meta::model::Job;
use reqwest::blocking::{Client as Http, RequestBuilder};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde_json::Value;

/// Exit code: the request was refused (by the API or by local validation).
pub const EXIT_API: u8 = 1;
/// Exit code: the daemon could not be reached or did not answer in time.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Most pages [`Client::get_all`] follows (of up to 1,000 rows each) before it gives up.
pub const MAX_PAGES: usize = 10_000;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The daemon answered with an error body (or an error status without one).
    Api {
        status: Option<u16>,
        code: String,
        message: String,
    },
    /// The daemon could not be reached at `url`.
    Unreachable { url: String, detail: String },
    /// The TLS handshake with `url` failed: the certificate is not trusted or not for the name
    /// in `--server`, the daemon wants a client certificate, or it does not speak TLS.
    Tls { url: String, detail: String },
    /// The daemon accepted the connection but did not answer within the timeout.
    Timeout { url: String, secs: u64 },
    /// The daemon answered 2xx with a body this kunlunctl does not understand (version skew).
    BadResponse { url: String, detail: String },
    /// A followed job (`job watch`, `--wait`) did not end within `secs`; `job` is its last
    /// state seen. The job itself goes on in the daemon.
    JobTimeout { job: Box<Job>, secs: u64 },
    /// A failure that still has something for stdout: `--json --wait` prints the job even when
    /// it failed or the wait timed out, and exits with the code of `error`.
    WithOutput {
        stdout: String,
        error: Box<CliError>,
    },
}

impl CliError {
    /// The documented process exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Api { .. } | CliError::BadResponse { .. } => EXIT_API,
            CliError::Unreachable { .. }
            | CliError::Tls { .. }
            | CliError::Timeout { .. }
            | CliError::JobTimeout { .. } => EXIT_UNREACHABLE,
            CliError::WithOutput { error, .. } => error.exit_code(),
        }
    }

    /// This failure with `stdout` to print before its message.
    pub fn with_stdout(self, stdout: String) -> Self {
        CliError::WithOutput {
            stdout,
            error: Box::new(self),
        }
    }

    /// What to print on stdout (if anything) and the failure itself.
    pub fn into_parts(self) -> (Option<String>, CliError) {
        match self {
            CliError::WithOutput { stdout, error } => (Some(stdout), *error),
            e => (None, e),
        }
    }

    /// A validation failure found before sending: reported exactly like the daemon's own
    /// `invalid_field` error, so the user sees one message whichever side caught it.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        CliError::Api {
            status: None,
            code: "invalid_field".into(),
            message: message.into(),
        }
    }

    /// The stable API code, if this is an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            CliError::Api { code, .. } => Some(code),
            CliError::WithOutput { error, .. } => error.code(),
            _ => None,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Api { code, message, .. } => write!(f, "{message} ({code})"),
            CliError::Unreachable { url, detail } => {
                write!(f, "cannot reach cluster-mgr at {url}: {detail}")
            }
            CliError::Tls { url, detail } => {
                write!(f, "TLS with cluster-mgr at {url} failed: {detail}")
            }
            CliError::Timeout { url, secs } => {
                write!(f, "cluster-mgr at {url} did not answer within {secs} s")
            }
            CliError::BadResponse { url, detail } => {
                write!(f, "unexpected answer from cluster-mgr at {url}: {detail}")
            }
            CliError::JobTimeout { job, secs } => write!(
                f,
                "job {} is still {} after {secs} s (it goes on in cluster-mgr)",
                job.id, job.status
            ),
            CliError::WithOutput { error, .. } => error.fmt(f),
        }
    }
}

/// A thin client of the daemon's REST API; one per invocation.
pub struct Client {
    base: String,
    timeout_secs: u64,
    http: Http,
    /// Sent as `Authorization: Bearer`; never printed.
    token: Option<String>,
}

/// How an https daemon is trusted and how this client proves itself (mTLS). Certificates are
/// always verified, and the name in `--server` must be one the daemon's certificate names.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM CA bundle (`--ca`): when set, the daemon's certificate must chain to it and the
    /// system's roots are not used; when not, the system's roots are.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain (`--client-cert`), sent when the daemon asks for one.
    pub client_cert: Option<PathBuf>,
    /// Its private key (`--client-key`), mode 0600 or narrower.
    pub client_key: Option<PathBuf>,
}

/// Largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

impl Client {
    /// `base` is a URL as returned by [`crate::cli::parse_server`] (no trailing slash).
    pub fn new(base: &str, timeout_secs: u64) -> Result<Self, CliError> {
        Client::connect(base, timeout_secs, &TlsOptions::default())
    }

    /// [`Client::new`] with the trust and identity of `tls` for an https daemon.
    pub fn connect(base: &str, timeout_secs: u64, tls: &TlsOptions) -> Result<Self, CliError> {
        let build_err = |e: reqwest::Error| CliError::Unreachable {
            url: base.to_string(),
            detail: root_cause(&e),
        };
        let mut builder = Http::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(timeout_secs))
            .connect_timeout(Duration::from_secs(timeout_secs.min(5)))
            .user_agent(concat!("kunlunctl/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &tls.ca {
            let pem = read_pem("--ca", ca, false)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                local_refusal(
                    "bad_tls_file",
                    format!("--ca {}: {}", ca.display(), root_cause(&e)),
                )
            })?;
            if certs.is_empty() {
                return Err(local_refusal(
                    "bad_tls_file",
                    format!("--ca {}: no `BEGIN CERTIFICATE` block in it", ca.display()),
                ));
            }
            // The private CA replaces the system's roots: a daemon with a private CA is never
            // also trusted on the word of any public CA.
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        match (&tls.client_cert, &tls.client_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let mut pem = read_pem("--client-key", key, true)?;
                pem.push(b'\n');
                pem.extend(read_pem("--client-cert", cert, false)?);
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    local_refusal(
                        "bad_tls_file",
                        format!(
                            "--client-cert {} / --client-key {}: {}",
                            cert.display(),
                            key.display(),
                            root_cause(&e)
                        ),
                    )
                })?;
                builder = builder.identity(id);
            }
            _ => {
                return Err(local_refusal(
                    "bad_tls_file",
                    "--client-cert and --client-key go together".into(),
                ))
            }
        }
        let http = builder.build().map_err(build_err)?;
        Ok(Client {
            base: base.to_string(),
            timeout_secs,
            http,
            token: None,
        })
    }

    /// This client, sending `token` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The daemon's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Builds `base + path` with the given query pairs (pairs whose value is `None` are left out).
    pub fn url(&self, path: &str, query: &[(&str, Option<String>)]) -> Result<Url, CliError> {
        let mut url =
            Url::parse(&format!("{}{}", self.base, path)).map_err(|e| CliError::BadResponse {
                url: self.base.clone(),
                detail: format!("bad URL {path}: {e}"),
            })?;
        let present: Vec<_> = query
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
            .collect();
        if !present.is_empty() {
            url.query_pairs_mut().extend_pairs(present);
        }
        Ok(url)
    }

    /// `GET` returning the JSON body.
    pub fn get(&self, url: Url) -> Result<Value, CliError> {
        self.send(self.http.request(Method::GET, url.clone()), &url)?
            .ok_or_else(|| self.empty_body(&url))
    }

    /// `GET` of a paginated list, every page: follows the `X-Next-Cursor` header (the API's
    /// keyset cursor) until the last page, at most [`MAX_PAGES`] pages, and returns the rows of
    /// all as one JSON array. Without a `limit` in `url`, pages of the largest size are asked.
    pub fn get_all(&self, url: Url) -> Result<Value, CliError> {
        let mut base = url.clone();
        if !url.query_pairs().any(|(k, _)| k == "limit") {
            base.query_pairs_mut()
                .append_pair("limit", &kunlun_meta::api::MAX_PAGE_LIMIT.to_string());
        }
        let mut rows = Vec::new();
        let mut page = base.clone();
        for _ in 0..MAX_PAGES {
            let (v, next) = self.send_paged(self.http.request(Method::GET, page.clone()), &page)?;
            match v {
                Some(Value::Array(a)) => rows.extend(a),
                _ => {
                    return Err(CliError::BadResponse {
                        url: page.to_string(),
                        detail: "a list page that is not a JSON array".into(),
                    })
                }
            }
            match next {
                None => return Ok(Value::Array(rows)),
                Some(after) => page = with_after(&base, &after),
            }
        }
        Err(CliError::BadResponse {
            url: url.to_string(),
            detail: format!("more than {MAX_PAGES} pages; narrow the listing"),
        })
    }

    /// `POST` a JSON body, returning the JSON answer.
    pub fn post<B: Serialize>(&self, url: Url, body: &B) -> Result<Value, CliError> {
        self.send(
            self.http.request(Method::POST, url.clone()).json(body),
            &url,
        )?
        .ok_or_else(|| self.empty_body(&url))
    }

    /// `PATCH` a JSON body, returning the JSON answer.
    pub fn patch<B: Serialize>(&self, url: Url, body: &B) -> Result<Value, CliError> {
        self.send(
            self.http.request(Method::PATCH, url.clone()).json(body),
            &url,
        )?
        .ok_or_else(|| self.empty_body(&url))
    }

    /// `PUT` a JSON body, returning the JSON answer.
    pub fn put<B: Serialize>(&self, url: Url, body: &B) -> Result<Value, CliError> {
        self.send(self.http.request(Method::PUT, url.clone()).json(body), &url)?
            .ok_or_else(|| self.empty_body(&url))
    }

    /// `DELETE` of something that answers with JSON (a job accepted: `202 {job_id}`).
    pub fn delete_json(&self, url: Url) -> Result<Value, CliError> {
        self.send(self.http.request(Method::DELETE, url.clone()), &url)?
            .ok_or_else(|| self.empty_body(&url))
    }

    /// `DELETE`; any body of the answer is ignored.
    pub fn delete(&self, url: Url) -> Result<(), CliError> {
        self.send(self.http.request(Method::DELETE, url.clone()), &url)
            .map(|_| ())
    }

    fn empty_body(&self, url: &Url) -> CliError {
        CliError::BadResponse {
            url: url.to_string(),
            detail: "empty body where JSON was expected".into(),
        }
    }

    /// Sends, maps transport failures to exit 3 and error statuses to the API's `{code, message}`.
    fn send(&self, req: RequestBuilder, url: &Url) -> Result<Option<Value>, CliError> {
        self.send_paged(req, url).map(|(v, _)| v)
    }

    /// [`Client::send`], also returning the next page's cursor (`X-Next-Cursor`), if any.
    fn send_paged(
        &self,
        req: RequestBuilder,
        url: &Url,
    ) -> Result<(Option<Value>, Option<String>), CliError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().map_err(|e| self.transport_error(&e))?;
        let next = resp
            .headers()
            .get(kunlun_meta::api::NEXT_CURSOR_HEADER)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        self.body_of(resp, url).map(|v| (v, next))
    }

    fn body_of(
        &self,
        resp: reqwest::blocking::Response,
        url: &Url,
    ) -> Result<Option<Value>, CliError> {
        let status = resp.status();
        let text = resp.text().map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || text.trim().is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| CliError::BadResponse {
                    url: url.to_string(),
                    detail: format!("HTTP {status} with a body that is not JSON ({e})"),
                });
        }
        Err(api_error(status, &text))
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        if e.is_timeout() {
            return CliError::Timeout {
                url: self.base.clone(),
                secs: self.timeout_secs,
            };
        }
        if is_tls_failure(e) {
            return CliError::Tls {
                url: self.base.clone(),
                detail: root_cause(e),
            };
        }
        CliError::Unreachable {
            url: self.base.clone(),
            detail: root_cause(e),
        }
    }
}

/// `base` with its `after` query pair set to `after`.
fn with_after(base: &Url, after: &str) -> Url {
    let pairs: Vec<(String, String)> = base
        .query_pairs()
        .filter(|(k, _)| k != "after")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut u = base.clone();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("after", after);
    u
}

/// The API token: `--token` / `$KUNLUNCTL_TOKEN` (`flag`), else the contents of `file`, else of
/// `~/.config/kunlunctl/token` if that exists; none is fine (a loopback daemon in open mode).
/// A token file readable by group or others is refused, like ssh refuses such a key.
pub fn resolve_token(
    flag: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, CliError> {
    if let Some(t) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some(t.to_string()));
    }
    let default = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".config/kunlunctl/token"));
    let (path, must_exist) = match (file, default) {
        (Some(f), _) => (f.to_path_buf(), true),
        (None, Some(d)) => (d, false),
        (None, None) => return Ok(None),
    };
    let refuse = |code: &str, message: String| CliError::Api {
        status: None,
        code: code.into(),
        message,
    };
    let md = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(None),
        Err(e) => {
            return Err(refuse(
                "invalid_request",
                format!("cannot read the token file {}: {e}", path.display()),
            ))
        }
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(
            "insecure_token_file",
            format!(
                "token file {} has mode {mode:04o}: others could read it, so it is not used",
                path.display()
            ),
        ));
    }
    if md.len() > 4096 {
        return Err(refuse(
            "invalid_request",
            format!("token file {} is larger than 4 KiB", path.display()),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        refuse(
            "invalid_request",
            format!("cannot read the token file {}: {e}", path.display()),
        )
    })?;
    let t = text.trim();
    if t.is_empty() {
        return Err(refuse(
            "invalid_request",
            format!("token file {} is empty", path.display()),
        ));
    }
    Ok(Some(t.to_string()))
}

/// A failure found before any request, reported like the API's own refusals (exit 1).
fn local_refusal(code: &str, message: String) -> CliError {
    CliError::Api {
        status: None,
        code: code.into(),
        message,
    }
}

/// The bytes of a certificate or key file named by `flag`: a regular file of at most
/// [`MAX_PEM_BYTES`]; with `secret`, refused when group or others may read it.
fn read_pem(flag: &str, path: &std::path::Path, secret: bool) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let bad = |m: String| local_refusal("bad_tls_file", format!("{flag} {}: {m}", path.display()));
    // Non-blocking: a FIFO named by mistake must not hang the command.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| bad(format!("cannot open: {e}")))?;
    let md = file
        .metadata()
        .map_err(|e| bad(format!("cannot stat: {e}")))?;
    if !md.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mode = md.permissions().mode() & 0o777;
    if secret && mode & 0o077 != 0 {
        return Err(local_refusal(
            "insecure_key_file",
            format!(
                "{flag} {} has mode {mode:04o}: others could read the private key, so it is not \
                 used",
                path.display()
            ),
        ));
    }
    if md.len() > MAX_PEM_BYTES {
        return Err(bad(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    Ok(bytes)
}

/// Whether a request failed in the TLS handshake: rustls' error sits in the chain, or wrapped
/// in an `io::Error` (whose `source()` skips it, so its payload is looked at directly). The
/// connector's errors reach here boxed in ways that hide the type, so the texts rustls gives
/// its handshake errors are recognised too.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    const RUSTLS_TEXTS: &[&str] = &[
        "invalid peer certificate",
        "peer sent no certificates",
        "peer is incompatible",
        "peer misbehaved",
        "received fatal alert",
        "received corrupt message",
        "unexpected message",
    ];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        let text = err.to_string();
        if RUSTLS_TEXTS.iter().any(|t| text.contains(t)) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Refuses to send a token in clear across a network: with a token, an `http://` server must
/// be a loopback address (or `localhost`) unless `allow` (`--insecure-http`).
pub fn check_transport(server: &str, has_token: bool, allow: bool) -> Result<(), CliError> {
    if !has_token || allow {
        return Ok(());
    }
    let Ok(url) = Url::parse(server) else {
        return Ok(()); // parse_server already vetted it
    };
    if url.scheme() != "http" {
        return Ok(());
    }
    let host = url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    Err(local_refusal(
        "insecure_transport",
        format!(
            "{server} is plain http to a host that is not loopback: the API token would cross \
             the network in clear, so nothing was sent"
        ),
    ))
}

/// Decodes an error answer: the API's `{code, message}` when present, else the status line and
/// the start of whatever came back (a proxy's HTML page, say).
pub fn api_error(status: StatusCode, body: &str) -> CliError {
    if let Ok(ErrorBody { code, message }) = serde_json::from_str::<ErrorBody>(body) {
        return CliError::Api {
            status: Some(status.as_u16()),
            code,
            message,
        };
    }
    let snippet: String = body.trim().chars().take(200).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::CONFLICT => "conflict",
        StatusCode::SERVICE_UNAVAILABLE => "store_unavailable",
        s if s.is_client_error() => "invalid_request",
        _ => "internal",
    };
    CliError::Api {
        status: Some(status.as_u16()),
        code: code.into(),
        message,
    }
}

/// The innermost cause of a reqwest error ("Connection refused (os error 111)"), which is what
/// tells a user what went wrong; reqwest's own top-level text only says "error sending request".
fn root_cause(e: &reqwest::Error) -> String {
    let mut last = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_api_errors() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            r#"{"code":"not_found","message":"machine 9 not found"}"#,
        );
        assert_eq!(e.to_string(), "machine 9 not found (not_found)");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.code(), Some("not_found"));
    }

    #[test]
    fn statuses_without_a_body_get_a_code_from_the_status() {
        let e = api_error(StatusCode::CONFLICT, "");
        assert_eq!(e.code(), Some("conflict"));
        assert_eq!(e.to_string(), "HTTP 409 Conflict (conflict)");
        let e = api_error(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>");
        assert_eq!(e.code(), Some("internal"));
        assert!(e.to_string().contains("<html>bad gateway</html>"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            CliError::invalid_field("hostaddr: bad").exit_code(),
            EXIT_API
        );
        let u = CliError::Unreachable {
            url: "http://x".into(),
            detail: "refused".into(),
        };
        assert_eq!(u.exit_code(), EXIT_UNREACHABLE);
        assert_eq!(
            CliError::Timeout {
                url: "http://x".into(),
                secs: 1
            }
            .exit_code(),
            EXIT_UNREACHABLE
        );
    }

    #[test]
    fn urls_carry_only_present_query_pairs() {
        let c = Client::new("http://127.0.0.1:1", 1).unwrap();
        let u = c
            .url(
                "/v1/jobs",
                &[
                    ("status", Some("done".into())),
                    ("job_type", None),
                    ("limit", Some("5".into())),
                ],
            )
            .unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:1/v1/jobs?status=done&limit=5");
        let u = c
            .url("/v1/jobs", &[("job_type", Some("a b&c".into()))])
            .unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:1/v1/jobs?job_type=a+b%26c");
        assert_eq!(
            c.url("/v1/machines", &[]).unwrap().as_str(),
            "http://127.0.0.1:1/v1/machines"
        );
    }

    #[test]
    fn the_next_page_keeps_the_query_and_sets_the_cursor() {
        let base = Url::parse("http://127.0.0.1:1/v1/jobs?status=done&limit=1000").unwrap();
        assert_eq!(
            with_after(&base, "41").as_str(),
            "http://127.0.0.1:1/v1/jobs?status=done&limit=1000&after=41"
        );
        let again = with_after(&with_after(&base, "41"), "7");
        assert_eq!(
            again.as_str(),
            "http://127.0.0.1:1/v1/jobs?status=done&limit=1000&after=7"
        );
    }

    #[test]
    fn a_token_goes_in_clear_only_to_loopback() {
        for server in [
            "http://127.0.0.1:8010",
            "http://127.9.9.9:1",
            "http://localhost:8010",
            "http://[::1]:8010",
            "https://10.0.0.5:8010",
            "https://mgr.example:8010",
        ] {
            check_transport(server, true, false).unwrap_or_else(|e| panic!("{server}: {e}"));
        }
        for server in [
            "http://10.0.0.5:8010",
            "http://mgr.example",
            "http://[fe80::1]:1",
        ] {
            let e = check_transport(server, true, false).unwrap_err();
            assert_eq!(e.code(), Some("insecure_transport"), "{server}");
            assert_eq!(e.exit_code(), EXIT_API);
            // No token, or the explicit opt-in: nothing to protect / the user's call.
            check_transport(server, false, false).unwrap();
            check_transport(server, true, true).unwrap();
        }
    }

    #[test]
    fn tls_files_are_checked_before_any_request() {
        let dir = std::env::temp_dir().join(format!("kunlunctl-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("client.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let opts = TlsOptions {
            ca: None,
            client_cert: Some(dir.join("client.crt")),
            client_key: Some(key.clone()),
        };
        let e = Client::connect("https://127.0.0.1:1", 1, &opts)
            .err()
            .expect("a 0644 key is refused");
        assert_eq!(e.code(), Some("insecure_key_file"), "{e}");
        let opts = TlsOptions {
            ca: Some(dir.join("missing-ca.pem")),
            ..TlsOptions::default()
        };
        let e = Client::connect("https://127.0.0.1:1", 1, &opts)
            .err()
            .expect("a missing CA file is refused");
        assert_eq!(e.code(), Some("bad_tls_file"), "{e}");
        assert!(e.to_string().contains("missing-ca.pem"), "{e}");
        std::fs::write(dir.join("empty-ca.pem"), "").unwrap();
        let opts = TlsOptions {
            ca: Some(dir.join("empty-ca.pem")),
            ..TlsOptions::default()
        };
        let e = Client::connect("https://127.0.0.1:1", 1, &opts)
            .err()
            .expect("a CA file without certificates is refused");
        assert!(e.to_string().contains("no `BEGIN CERTIFICATE`"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refused_connection_is_unreachable() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), 2).unwrap();
        let e = c.get(c.url("/healthz", &[]).unwrap()).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_UNREACHABLE, "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
