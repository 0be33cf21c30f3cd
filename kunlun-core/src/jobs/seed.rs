//! Seeding a new replica with its shard's data and making it follow the primary by GTID:
//! `mariadb-dump` of a source node (a healthy replica when there is one, else the primary),
//! run on the new node's machine and loaded into the new instance, then
//! `SET GLOBAL gtid_slave_pos` from the dump's position, `CHANGE MASTER TO … MASTER_USE_GTID`,
//! `START SLAVE`, and a bounded wait until it has caught up.
//!
//! Invariants: the `mysql` (and `sys`) schema is never copied, so the new node keeps the
//! system users its recipe created; the dump is loaded with `sql_log_bin=0`, so the new node
//! has no GTIDs of its own (no errant transactions); passwords travel only on the SSH
//! session's stdin into 0600 option files that are removed whatever happens, never on a
//! command line; every remote call has a deadline.

use std::time::{Duration, Instant};

use kunlun_meta::model::{MemberState, NodeStatus, ShardNode};
use kunlun_provision::recipe::{sh_quote, Recipe};
use kunlun_provision::{ExecInput, SshExecutor, SshTarget};

use crate::accounts::REPL_USER;
use crate::error::{Error, Result};
use crate::storage::gtid::GtidPos;
use crate::storage::probe::{probe_node, NodeProbe};
use crate::storage::replication::change_master_sql;
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// Deadline of dumping and loading one new replica's data.
pub const SEED_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a seeded replica may take to catch up with its primary.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// A replica further behind than this is not used as the dump source.
const SOURCE_MAX_LAG_S: i64 = 30;

/// The dump and client programs next to the recipe's `mariadb` client (bare names, found
/// through `PATH`, when the recipe names no client).
pub fn client_programs(recipe: &dyn Recipe) -> (String, String) {
    let client = recipe
        .required_binaries()
        .into_iter()
        .find(|b| b.rsplit('/').next() == Some("mariadb"));
    match client {
        Some(c) => {
            let dir = c.rsplit_once('/').map_or("", |(d, _)| d);
            let dump = if dir.is_empty() {
                "mariadb-dump".to_string()
            } else {
                format!("{dir}/mariadb-dump")
            };
            (dump, c)
        }
        None => ("mariadb-dump".into(), "mariadb".into()),
    }
}

/// The `[client]` option file logging in to `addr` (refuses values that would break it).
/// Lines of an [`option_file`]: the seed script reads the source's file off its stdin by lines.
const OPTION_FILE_LINES: usize = 6;

pub fn option_file(addr: &NodeAddr) -> Result<String> {
    let ok = |s: &str| {
        !s.is_empty()
            && !s
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\'' || c == '\\' || c == '#')
    };
    if !ok(&addr.host) || !ok(&addr.user) || !ok(&addr.password) {
        return Err(Error::Invalid(format!(
            "login of {addr} cannot be written to an option file"
        )));
    }
    Ok(format!(
        "[client]\nhost={}\nport={}\nuser={}\npassword=\"{}\"\nprotocol=TCP\n",
        addr.host, addr.port, addr.user, addr.password
    ))
}

/// The shell script run on the new node's machine: write the option files `src` and `dst`
/// (mode 0600) from its stdin (the source's [`OPTION_FILE_LINES`] lines, then the new node's),
/// dump the source into `out`, check it holds a GTID position, load it into the new node without
/// binary logging, print `seed-gtid=<position>`; the three files are removed on exit.
pub fn seed_script(dump: &str, client: &str, src: &str, dst: &str, out: &str) -> String {
    format!(
        r#"umask 077
src={src}; dst={dst}; out={out}
trap 'rm -f "$src" "$dst" "$out"' EXIT
: >"$src" || exit 1
i=0
while [ $i -lt {lines} ] && IFS= read -r l; do printf '%s\n' "$l" >>"$src"; i=$((i+1)); done
cat >"$dst" || exit 1
{dump} --defaults-file="$src" --single-transaction --gtid --master-data=2 --all-databases \
--ignore-database=mysql --ignore-database=sys --routines --events --triggers >"$out" || exit 1
grep -q "SET GLOBAL gtid_slave_pos=" "$out" || {{ echo "the dump holds no GTID position" >&2; exit 3; }}
pos=$(sed -n "s/.*SET GLOBAL gtid_slave_pos='\([0-9,-]*\)'.*/\1/p" "$out" | head -n1)
{{ echo 'SET SESSION sql_log_bin=0;'; cat "$out"; }} | {client} --defaults-file="$dst" --batch || exit 1
echo "seed-gtid=$pos""#,
        src = sh_quote(src),
        dst = sh_quote(dst),
        out = sh_quote(out),
        dump = sh_quote(dump),
        client = sh_quote(client),
        lines = OPTION_FILE_LINES,
    )
}

/// The GTID position the seed script printed; only digits, `-` and `,` are accepted, so it is
/// safe inside a quoted SQL literal.
pub fn parse_seed_gtid(stdout: &str) -> Result<String> {
    let pos = stdout
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("seed-gtid="))
        .ok_or_else(|| Error::Internal("the seed script printed no GTID position".into()))?;
    GtidPos::parse(pos).map_err(|e| Error::Internal(e.to_string()))?;
    if !pos
        .chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == ',')
    {
        return Err(Error::Internal(format!("odd GTID position '{pos}'")));
    }
    Ok(pos.to_string())
}

/// The dump source among `nodes`: the first active replica (not one being deleted) that
/// replicates from `primary` with both threads running and little lag, else the primary.
pub async fn choose_source(nodes: &[ShardNode], primary: &ShardNode) -> ShardNode {
    for n in nodes.iter().filter(|n| {
        n.member_state == MemberState::Replica
            && n.status == NodeStatus::Active
            && n.id != primary.id
    }) {
        let p = probe_node(&NodeAddr::from(n), StorageOptions::default()).await;
        if healthy_replica(&p, primary) {
            return n.clone();
        }
    }
    primary.clone()
}

fn healthy_replica(p: &NodeProbe, primary: &ShardNode) -> bool {
    p.reachable
        && p.channel_from(&primary.hostaddr, primary.port)
            .is_some_and(|c| {
                c.io_connected()
                    && c.sql_running
                    && c.seconds_behind.is_some_and(|s| s <= SOURCE_MAX_LAG_S)
            })
}

/// Dumps `source` into the new node `new` (installed, empty) by running the seed script on
/// `target` (the new node's machine); returns the GTID position the data is at.
pub async fn seed(
    ssh: &SshExecutor,
    recipe: &dyn Recipe,
    target: &SshTarget,
    base_dir: &str,
    source: &NodeAddr,
    new: &NodeAddr,
) -> Result<String> {
    let (dump, client) = client_programs(recipe);
    let base = base_dir.trim_end_matches('/');
    let (src, dst, out) = (
        format!("{base}/.seed-src.cnf"),
        format!("{base}/.seed-dst.cnf"),
        format!("{base}/.seed.sql"),
    );
    let t = Duration::from_secs(30);
    // Both option files go on the session's stdin (one login shell, no password on a
    // command line); the script writes them 0600 and removes them on exit.
    let (src_file, dst_file) = (option_file(source)?, option_file(new)?);
    debug_assert_eq!(src_file.lines().count(), OPTION_FILE_LINES);
    let mut input = src_file.into_bytes();
    input.extend_from_slice(dst_file.as_bytes());
    let script = seed_script(&dump, &client, &src, &dst, &out);
    let r = ssh
        .exec_with(
            target,
            &format!("sh -c {}", sh_quote(&script)),
            ExecInput {
                stdin: Some(input),
                on_event: None,
            },
            SEED_TIMEOUT,
        )
        .await
        .and_then(|o| o.checked());
    match r {
        Ok(o) => parse_seed_gtid(&o.stdout_str()),
        Err(e) => {
            // The script's trap removes the files; after a timeout or a lost connection it may
            // not have run.
            let rm = format!(
                "rm -f {} {} {}",
                sh_quote(&src),
                sh_quote(&dst),
                sh_quote(&out)
            );
            let _ = ssh.exec(target, &rm, t).await;
            Err(Error::Unavailable(format!("seed {new} from {source}: {e}")))
        }
    }
}

/// The statements turning semi-sync on (lossless: wait point `AFTER_SYNC`) or off on a primary.
pub fn semi_sync_statements(on: bool) -> &'static [&'static str] {
    if on {
        &[
            "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC",
            "SET GLOBAL rpl_semi_sync_master_enabled = ON",
        ]
    } else {
        &["SET GLOBAL rpl_semi_sync_master_enabled = OFF"]
    }
}

/// Turns semi-sync on or off on `primary` (each statement under the storage deadlines).
pub async fn set_semi_sync(primary: &NodeAddr, on: bool) -> Result<()> {
    let r = async {
        let mut c = StorageConn::connect(primary, StorageOptions::default()).await?;
        for sql in semi_sync_statements(on) {
            c.exec(sql).await?;
        }
        c.close().await;
        Ok::<_, crate::storage::Error>(())
    }
    .await;
    r.map_err(|e| Error::Unavailable(format!("semi-sync on {primary}: {e}")))
}

/// Makes `new` follow `primary` by GTID from `gtid`: its binlog reset (nothing was logged
/// there: users and the load ran with sql_log_bin=0) and its replica position set to `gtid`.
pub async fn follow(
    new: &NodeAddr,
    primary: (&str, u16),
    repl_pwd: &str,
    gtid: &str,
) -> Result<()> {
    GtidPos::parse(gtid).map_err(|e| Error::Internal(e.to_string()))?;
    attach(new, primary, repl_pwd, Some(gtid)).await
}

/// Points `new` at `primary` (GTID, `slave_pos`) and starts replication; with `reset_to`, its
/// binlog is reset and its replica position set there first, else both are kept (a restored
/// node whose GTID state is set already).
pub async fn attach(
    new: &NodeAddr,
    primary: (&str, u16),
    repl_pwd: &str,
    reset_to: Option<&str>,
) -> Result<()> {
    if repl_pwd.contains(['\'', '\\']) {
        return Err(Error::Invalid("replication password holds a quote".into()));
    }
    let change = change_master_sql(primary.0, primary.1, REPL_USER, repl_pwd);
    let r = async {
        let mut c = StorageConn::connect(new, StorageOptions::default()).await?;
        c.exec("STOP SLAVE").await?;
        if let Some(gtid) = reset_to {
            c.exec("RESET MASTER").await?;
            c.exec(&format!("SET GLOBAL gtid_slave_pos = '{gtid}'"))
                .await?;
        }
        c.exec(&change).await?;
        // Its own semi-sync master side stays off until a promotion, and it is read-only
        // (see install.rs).
        c.exec(
            "SET GLOBAL rpl_semi_sync_master_enabled = OFF; SET GLOBAL read_only = ON; START SLAVE",
        )
        .await?;
        c.close().await;
        Ok::<_, crate::storage::Error>(())
    }
    .await;
    r.map_err(|e| Error::Unavailable(format!("replication of {new}: {e}")))
}

/// Waits (at most `timeout`) until `new` replicates from `primary` with both threads running
/// and holds everything `primary` had logged when the wait began.
pub async fn wait_caught_up(new: &NodeAddr, primary: &NodeAddr, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let target = {
        let p = probe_node(primary, StorageOptions::default()).await;
        if let Some(e) = p.error {
            return Err(Error::Unavailable(format!("primary {primary}: {e}")));
        }
        GtidPos::parse(p.gtid_binlog_pos.as_deref().unwrap_or(""))
            .map_err(|e| Error::Internal(e.to_string()))?
    };
    let mut last;
    loop {
        let p = probe_node(new, StorageOptions::default()).await;
        let ch = p.channel_from(&primary.host, primary.port);
        let cur = GtidPos::parse(p.gtid_current_pos.as_deref().unwrap_or("")).ok();
        let running = ch.is_some_and(|c| c.io_connected() && c.sql_running);
        if running && cur.as_ref().is_some_and(|c| c.contains(&target)) {
            return Ok(());
        }
        last = match (&p.error, ch) {
            (Some(e), _) => e.clone(),
            (None, None) => "no replication channel from the primary".into(),
            (None, Some(c)) => format!(
                "io {} sql {} io errno {}, at '{}' of '{target}'",
                c.io_running,
                if c.sql_running { "Yes" } else { "No" },
                c.last_io_errno,
                p.gtid_current_pos.as_deref().unwrap_or("")
            ),
        };
        if started.elapsed() >= timeout {
            return Err(Error::Unavailable(format!(
                "{new} did not catch up with {primary} within {}s: {last}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semi_sync_is_turned_on_lossless_and_off_plainly() {
        let on = semi_sync_statements(true);
        assert_eq!(on.len(), 2);
        assert!(
            on[0].contains("wait_point = AFTER_SYNC"),
            "wait point set before enabling"
        );
        assert!(on[1].ends_with("enabled = ON"));
        assert_eq!(
            semi_sync_statements(false),
            ["SET GLOBAL rpl_semi_sync_master_enabled = OFF"]
        );
    }

    fn addr(pw: &str) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.2".into(),
            port: 57001,
            user: "clustmgr".into(),
            password: pw.into(),
        }
    }

    #[test]
    fn option_files_carry_the_login_and_refuse_odd_values() {
        let f = option_file(&addr("Abc123")).unwrap();
        assert!(f.starts_with("[client]\n"));
        assert!(f.contains("port=57001\n"));
        assert!(f.contains("password=\"Abc123\"\n"));
        assert_eq!(
            f.lines().count(),
            OPTION_FILE_LINES,
            "the seed script reads this many"
        );
        assert!(option_file(&addr("a\"b")).is_err());
        assert!(option_file(&addr("a\nb")).is_err());
        assert!(option_file(&addr("")).is_err());
    }

    #[test]
    fn the_seed_script_skips_system_schemas_and_binary_logging() {
        let s = seed_script(
            "/usr/bin/mariadb-dump",
            "/usr/bin/mariadb",
            "/d/a.cnf",
            "/d/b.cnf",
            "/d/o.sql",
        );
        assert!(s.contains("--ignore-database=mysql"));
        assert!(s.contains("--gtid --master-data=2"));
        assert!(s.contains("--single-transaction"));
        assert!(s.contains("SET SESSION sql_log_bin=0;"));
        assert!(s.contains("trap 'rm -f \"$src\" \"$dst\" \"$out\"' EXIT"));
        assert!(!s.contains("password"), "no password on a command line");
        assert!(s.contains(&format!("[ $i -lt {OPTION_FILE_LINES} ] && IFS= read -r l")));
    }

    #[test]
    fn seed_gtid_is_parsed_and_checked() {
        assert_eq!(parse_seed_gtid("x\nseed-gtid=0-1-5\n").unwrap(), "0-1-5");
        assert_eq!(parse_seed_gtid("seed-gtid=\n").unwrap(), "");
        assert_eq!(
            parse_seed_gtid("seed-gtid=0-1-5,1-2-3").unwrap(),
            "0-1-5,1-2-3"
        );
        assert!(parse_seed_gtid("nothing").is_err());
        assert!(parse_seed_gtid("seed-gtid=0-1-5'; DROP").is_err());
    }

    #[test]
    fn client_programs_sit_next_to_the_recipe_client() {
        let r = kunlun_provision::recipe::MariaDbRecipe::default();
        let (dump, client) = client_programs(&r);
        assert_eq!(client, "/usr/bin/mariadb");
        assert_eq!(dump, "/usr/bin/mariadb-dump");
    }
}
