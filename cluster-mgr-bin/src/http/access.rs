//! Who may call what: the one table of the role each route and method needs.
//!
//! Invariant: a method and path not in [`RULES`] needs [`Role::Admin`], so a route added to the
//! route table without a rule here is closed, never open; only `GET /healthz` needs nothing.

use actix_web::http::Method;
use kunlun_meta::auth::Role;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No token (liveness probes).
    Nothing,
    /// A token with at least this role.
    Role(Role),
}

/// `(method, path pattern, need)`: a `{}` segment matches any one segment, a trailing `*`
/// any rest.
pub const RULES: &[(&str, &str, Need)] = &[
    ("GET", "/healthz", Need::Nothing),
    ("GET", "/metrics", Need::Role(Role::Viewer)),
    ("GET", "/v1/openapi.json", Need::Role(Role::Viewer)),
    ("GET", "/docs/*", Need::Role(Role::Viewer)),
    ("GET", "/v1/leader", Need::Role(Role::Viewer)),
    ("GET", "/v1/meta", Need::Role(Role::Viewer)),
    ("GET", "/v1/machines", Need::Role(Role::Viewer)),
    ("POST", "/v1/machines", Need::Role(Role::Admin)),
    ("GET", "/v1/machines/{}", Need::Role(Role::Viewer)),
    ("PATCH", "/v1/machines/{}", Need::Role(Role::Admin)),
    ("DELETE", "/v1/machines/{}", Need::Role(Role::Admin)),
    ("GET", "/v1/backup_storages", Need::Role(Role::Viewer)),
    // A storage makes the daemon write and remove files under its directory as the
    // machine's SSH user: an admin's act, like registering the machine.
    ("POST", "/v1/backup_storages", Need::Role(Role::Admin)),
    ("GET", "/v1/backup_storages/{}", Need::Role(Role::Viewer)),
    ("DELETE", "/v1/backup_storages/{}", Need::Role(Role::Admin)),
    ("GET", "/v1/clusters", Need::Role(Role::Viewer)),
    ("POST", "/v1/clusters", Need::Role(Role::Operator)),
    ("GET", "/v1/clusters/{}", Need::Role(Role::Viewer)),
    ("DELETE", "/v1/clusters/{}", Need::Role(Role::Operator)),
    ("GET", "/v1/clusters/{}/policy", Need::Role(Role::Viewer)),
    (
        "PATCH",
        "/v1/clusters/{}/policy",
        Need::Role(Role::Operator),
    ),
    ("GET", "/v1/clusters/{}/shards", Need::Role(Role::Viewer)),
    ("POST", "/v1/clusters/{}/shards", Need::Role(Role::Operator)),
    (
        "DELETE",
        "/v1/clusters/{}/shards/{}",
        Need::Role(Role::Operator),
    ),
    (
        "POST",
        "/v1/clusters/{}/shards/{}/nodes",
        Need::Role(Role::Operator),
    ),
    (
        "DELETE",
        "/v1/clusters/{}/shards/{}/nodes/{}",
        Need::Role(Role::Operator),
    ),
    (
        "GET",
        "/v1/clusters/{}/comp_nodes",
        Need::Role(Role::Viewer),
    ),
    (
        "POST",
        "/v1/clusters/{}/comp_nodes",
        Need::Role(Role::Operator),
    ),
    (
        "DELETE",
        "/v1/clusters/{}/comp_nodes/{}",
        Need::Role(Role::Operator),
    ),
    ("GET", "/v1/clusters/{}/xa", Need::Role(Role::Viewer)),
    (
        "POST",
        "/v1/clusters/{}/xa/{}/resolve",
        Need::Role(Role::Operator),
    ),
    ("GET", "/v1/shards/{}", Need::Role(Role::Viewer)),
    ("GET", "/v1/shards/{}/nodes", Need::Role(Role::Viewer)),
    (
        "POST",
        "/v1/shards/{}/switchover",
        Need::Role(Role::Operator),
    ),
    (
        "POST",
        "/v1/shards/{}/no_switch",
        Need::Role(Role::Operator),
    ),
    // Stop, start or restart one instance (`control_instance`).
    ("POST", "/v1/instances/{}/stop", Need::Role(Role::Operator)),
    ("POST", "/v1/instances/{}/start", Need::Role(Role::Operator)),
    (
        "POST",
        "/v1/instances/{}/restart",
        Need::Role(Role::Operator),
    ),
    // Rebuild one storage replica (job `rebuild_node`).
    (
        "POST",
        "/v1/instances/{}/rebuild",
        Need::Role(Role::Operator),
    ),
    // Cluster backups (job `backup_cluster`) and the catalogue.
    (
        "POST",
        "/v1/clusters/{}/backups",
        Need::Role(Role::Operator),
    ),
    // Scheduled backups and their retention (the leader's backup scheduler).
    (
        "GET",
        "/v1/clusters/{}/backup_schedule",
        Need::Role(Role::Viewer),
    ),
    (
        "PUT",
        "/v1/clusters/{}/backup_schedule",
        Need::Role(Role::Operator),
    ),
    (
        "DELETE",
        "/v1/clusters/{}/backup_schedule",
        Need::Role(Role::Operator),
    ),
    ("GET", "/v1/backups", Need::Role(Role::Viewer)),
    ("GET", "/v1/backups/{}", Need::Role(Role::Viewer)),
    ("DELETE", "/v1/backups/{}", Need::Role(Role::Operator)),
    // Restore into a new cluster (job `restore_cluster`) or over an empty one
    // (`restore_into_cluster`).
    ("POST", "/v1/backups/{}/restore", Need::Role(Role::Operator)),
    (
        "POST",
        "/v1/clusters/{}/restore",
        Need::Role(Role::Operator),
    ),
    ("GET", "/v1/jobs", Need::Role(Role::Viewer)),
    ("GET", "/v1/jobs/{}", Need::Role(Role::Viewer)),
    ("GET", "/v1/ha", Need::Role(Role::Viewer)),
    ("GET", "/v1/failovers", Need::Role(Role::Viewer)),
    ("GET", "/v1/failovers/{}", Need::Role(Role::Viewer)),
    ("GET", "/v1/tokens", Need::Role(Role::Admin)),
    ("POST", "/v1/tokens", Need::Role(Role::Admin)),
    ("DELETE", "/v1/tokens/{}", Need::Role(Role::Admin)),
    ("GET", "/v1/audit", Need::Role(Role::Admin)),
    // The KunlunBase job API: one path for every job type; machine types need admin (checked
    // by the handler), a client on `emit_allowed_clients` needs no token.
    ("POST", "/HttpService/Emit", Need::Role(Role::Operator)),
    ("OPTIONS", "/HttpService/Emit", Need::Nothing),
    // The web console: its pages check the session cookie themselves (and send a browser
    // without one to the login page); its login takes a token, its logout the session's CSRF
    // token. What the console changes goes through the routes above, with their roles.
    ("GET", "/ui", Need::Nothing),
    ("GET", "/ui/*", Need::Nothing),
    ("POST", "/ui/login", Need::Nothing),
    ("POST", "/ui/logout", Need::Nothing),
];

fn matches(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return path.starts_with(prefix);
    }
    let mut p = pattern.split('/');
    let mut q = path.split('/');
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some("{}"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// What `method path` needs; [`Role::Admin`] when no rule names it.
pub fn need(method: &Method, path: &str) -> Need {
    RULES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && matches(p, path))
        .map_or(Need::Role(Role::Admin), |(_, _, n)| *n)
}

/// Whether a request with this method changes something (and so is audited and needs an
/// allowed `Origin`).
pub fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_viewer_writes_are_operator_or_admin() {
        assert_eq!(need(&Method::GET, "/healthz"), Need::Nothing);
        assert_eq!(
            need(&Method::GET, "/v1/clusters/7"),
            Need::Role(Role::Viewer)
        );
        assert_eq!(
            need(&Method::DELETE, "/v1/clusters/7/shards/3/nodes/9"),
            Need::Role(Role::Operator)
        );
        assert_eq!(need(&Method::POST, "/v1/machines"), Need::Role(Role::Admin));
        assert_eq!(
            need(&Method::GET, "/docs/index.html"),
            Need::Role(Role::Viewer)
        );
    }

    #[test]
    fn anything_unknown_needs_admin() {
        for (m, p) in [
            ("POST", "/healthz"),
            ("GET", "/v1/new_route"),
            ("GET", "/v1/clusters//shards"),
            ("BREW", "/v1/clusters"),
            ("GET", "/v1/clusters/1/shards/2/extra"),
            ("PUT", "/v1/machines/1"),
            ("POST", "/ui/clusters"),
            ("DELETE", "/ui/login"),
        ] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(need(&m, p), Need::Role(Role::Admin), "{m} {p}");
        }
    }
}
