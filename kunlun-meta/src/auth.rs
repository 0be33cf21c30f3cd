//! API access: the roles a bearer token can have, the bodies of `/v1/tokens` and `/v1/audit`,
//! shared by the daemon and `kunlunctl`.
//!
//! Invariant: roles are ordered (`viewer` < `operator` < `admin`) and a role allows everything
//! a lower one does; no type here ever carries a token's secret except [`CreatedToken`], the
//! one answer that shows it (once, at creation).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::validate;

/// What a token may do. Ordered: each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: every GET route and `/metrics`.
    Viewer,
    /// Plus jobs (create, scale, delete clusters), switchover, no-switch, XA resolve.
    Operator,
    /// Plus machines, tokens and the audit trail.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The stored and shown spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!("role: '{s}' is not one of viewer, operator, admin"))
            })
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name like other names (`A-Z a-z 0-9 _ - .`, at most 64); unique, never reused.
    #[cfg_attr(
        feature = "utoipa",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    )]
    pub name: String,
    pub role: Role,
}

impl CreateToken {
    /// Checks the name.
    pub fn validate(&self) -> Result<()> {
        validate::name("name", &self.name)
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    #[serde(with = "crate::utc")]
    pub created_at: chrono::NaiveDateTime,
    /// Updated at most once a minute.
    #[serde(default, with = "crate::utc::option")]
    pub last_used_at: Option<chrono::NaiveDateTime>,
    /// Set when revoked; a revoked token is refused and its name stays taken.
    #[serde(default, with = "crate::utc::option")]
    pub revoked_at: Option<chrono::NaiveDateTime>,
}

/// The answer to `POST /v1/tokens`: the only time the secret is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    /// `Authorization: Bearer <token>`; store it now, it cannot be shown again.
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// One recorded mutating request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "crate::utc")]
    pub at: chrono::NaiveDateTime,
    /// The token's name; none in open mode (loopback, no token ever created).
    pub token_name: Option<String>,
    pub method: String,
    pub path: String,
    /// The peer address of the connection.
    pub client: String,
    /// The HTTP status of the answer.
    pub status: i64,
}

/// What to record of one mutating request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub token_name: Option<String>,
    pub method: String,
    pub path: String,
    pub client: String,
    pub status: i64,
}

/// `GET /v1/audit?limit=`: newest first; 100 by default, at most 1000.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many, newest first (default 100, 1..=1000; anything else is a 400).
    #[cfg_attr(feature = "utoipa", param(minimum = 1, maximum = 1000))]
    pub limit: Option<i64>,
}

/// Default and largest page of the audit trail.
pub const AUDIT_DEFAULT_LIMIT: i64 = 100;
pub const AUDIT_MAX_LIMIT: i64 = 1000;

impl AuditQuery {
    /// The number of entries to return, or why not.
    pub fn limit(&self) -> Result<i64> {
        match self.limit {
            None => Ok(AUDIT_DEFAULT_LIMIT),
            Some(n) if (1..=AUDIT_MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(Error::Invalid(format!(
                "limit: {n} is not in 1..={AUDIT_MAX_LIMIT}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_their_spelling() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn audit_limit_is_bounded() {
        assert_eq!(AuditQuery { limit: None }.limit().unwrap(), 100);
        assert!(AuditQuery { limit: Some(0) }.limit().is_err());
        assert!(AuditQuery { limit: Some(1001) }.limit().is_err());
    }

    #[test]
    fn created_token_debug_hides_the_secret() {
        let t = CreatedToken {
            name: "a".into(),
            role: Role::Admin,
            token: "kl_secret".into(),
        };
        assert!(!format!("{t:?}").contains("kl_secret"));
    }
}
