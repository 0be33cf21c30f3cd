//! `kunlunctl token create|list|rm` over `/v1/tokens` and `kunlunctl audit` over `/v1/audit`
//! (both admin only).
//!
//! Invariant: a token's secret is printed only by `token create`, once, as the daemon returns
//! it; the token kunlunctl authenticates with is never printed.

use clap::{Args, Subcommand};
use kunlun_meta::auth::{AuditEntry, CreateToken, CreatedToken, Role, TokenInfo};

use crate::client::{CliError, Client};
use crate::decode;
use crate::output::{self, Table};

/// `kunlunctl token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; its secret is printed once (store it, e.g. in a 0600 token file).
    Create {
        /// Name (A-Z a-z 0-9 _ - .), never reused.
        #[arg(long)]
        name: String,
        /// viewer (reads), operator (+ jobs, switchover, XA) or admin (+ machines, tokens).
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List tokens (never their secrets).
    #[command(alias = "ls")]
    List,
    /// Revoke a token: refused from now on, its name stays taken.
    #[command(alias = "revoke")]
    Rm {
        /// Token name.
        name: String,
    },
}

/// `kunlunctl audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries, newest first (1-1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub limit: i64,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>().map_err(|e| e.to_string())
}

/// Executes a `token` command and returns what to print.
pub fn run(client: &Client, cmd: &TokenCmd, json_out: bool) -> Result<String, CliError> {
    match cmd {
        TokenCmd::Create { name, role } => {
            let body = CreateToken {
                name: name.clone(),
                role: *role,
            };
            body.validate()
                .map_err(|e| CliError::invalid_field(e.to_string()))?;
            let v = client.post(client.url("/v1/tokens", &[])?, &body)?;
            if json_out {
                return Ok(format!("{v}\n"));
            }
            let t: CreatedToken = decode(v, "/v1/tokens")?;
            Ok(format!(
                "token '{}' ({}) created; it is shown only this once:\n{}\n",
                t.name, t.role, t.token
            ))
        }
        TokenCmd::List => {
            let v = client.get(client.url("/v1/tokens", &[])?)?;
            if json_out {
                return Ok(output::json(&v) + "\n");
            }
            let list: Vec<TokenInfo> = decode(v, "/v1/tokens")?;
            let mut t = Table::new(&["NAME", "ROLE", "CREATED", "LAST USED", "REVOKED"]);
            for k in list {
                t.row(vec![
                    k.name,
                    k.role.to_string(),
                    output::time(Some(k.created_at)),
                    output::time(k.last_used_at),
                    output::time(k.revoked_at),
                ]);
            }
            Ok(t.render())
        }
        TokenCmd::Rm { name } => {
            let path = format!("/v1/tokens/{name}");
            kunlun_meta::validate::name("name", name)
                .map_err(|e| CliError::invalid_field(e.to_string()))?;
            client.delete(client.url(&path, &[])?)?;
            Ok(format!("token '{name}' revoked\n"))
        }
    }
}

/// Executes `audit` and returns what to print.
pub fn audit(client: &Client, args: &AuditArgs, json_out: bool) -> Result<String, CliError> {
    let v = client.get(client.url("/v1/audit", &[("limit", Some(args.limit.to_string()))])?)?;
    if json_out {
        return Ok(output::json(&v) + "\n");
    }
    let list: Vec<AuditEntry> = decode(v, "/v1/audit")?;
    let mut t = Table::new(&["ID", "AT", "TOKEN", "METHOD", "PATH", "CLIENT", "STATUS"]);
    for e in list {
        t.row(vec![
            e.id.to_string(),
            output::time(Some(e.at)),
            e.token_name.unwrap_or_else(|| "(open mode)".into()),
            e.method,
            e.path,
            e.client,
            e.status.to_string(),
        ]);
    }
    Ok(t.render())
}
