//! The replication statements of a MariaDB shard member, in one place: how a replica is
//! pointed at its source. Installs (`jobs`), seeding a new node and failover (`ha`) all use
//! these, so a replica is configured the same way whichever path made it one.
//!
//! Invariant: the source is always followed by GTID from `gtid_slave_pos`, with a 1 s connect
//! retry and heartbeats every 0.5 s (a receiver that heard nothing for longer than that is one
//! of the signs of a silent source, `ha::detect`; it reconnects itself after
//! `slave_net_timeout`); literals are escaped, and the password is the statement's last
//! clause, because server error messages quote only a statement's start.

/// The `CHANGE MASTER TO` statement that points a replica at `host:port`, logging in as
/// `user`/`password` (the cluster's `repl` account).
pub fn change_master_sql(host: &str, port: u16, user: &str, password: &str) -> String {
    format!(
        "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={port}, MASTER_USER='{}', \
         MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=0.5, \
         MASTER_PASSWORD='{}'",
        quote(host),
        quote(user),
        quote(password)
    )
}

/// Escapes `s` for a single-quoted SQL literal.
pub fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_follows_by_gtid_escapes_literals_and_ends_with_the_password() {
        let sql = change_master_sql("10.0.0.1", 3306, "repl", "p'w\\d");
        assert!(sql.starts_with(
            "CHANGE MASTER TO MASTER_HOST='10.0.0.1', MASTER_PORT=3306, MASTER_USER='repl', "
        ));
        assert!(sql.contains("MASTER_USE_GTID=slave_pos"), "{sql}");
        assert!(sql.contains("MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=0.5"));
        assert!(sql.ends_with("MASTER_PASSWORD='p\\'w\\\\d'"), "{sql}");
    }
}
