//! Unit tests of the config rules: one test per rule, plus the sample file.

use std::path::Path;
use std::time::Duration;

use clap::Parser;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_cnf_text(text, "test.cnf")
}

fn err(text: &str) -> String {
    parse(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn defaults_are_valid_and_match_the_brief() {
    let c = Config::from_raw(&Raw::default(), None).unwrap();
    assert_eq!(c.meta_backend, MetaBackend::Sqlite);
    assert_eq!(c.sqlite_path, Path::new("./data/cluster_mgr.sqlite3"));
    assert_eq!(c.http_addr().to_string(), "127.0.0.1:8010");
    assert_eq!(c.meta_database, "kunlun_metadata_db");
    assert_eq!(c.check_shard_interval, Duration::from_secs(1));
    assert_eq!(c.mysql_connect_timeout, Duration::from_secs(10));
    assert_eq!(c.mysql_read_timeout, Duration::from_secs(20));
    assert_eq!(c.commit_log_retention, Duration::from_secs(24 * 3600));
    assert_eq!(c.statement_retry_interval, Duration::from_millis(100));
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_file, None);
}

#[test]
fn every_default_passes_its_own_range() {
    for spec in KEYS {
        let text = format!("{} = {}\n", spec.name, spec.default);
        if spec.default.is_empty() {
            continue;
        }
        parse(&text).unwrap_or_else(|e| panic!("default of {} refused: {e}", spec.name));
    }
}

#[test]
fn comments_blank_lines_and_trailing_comments_are_ignored() {
    let c = parse("# a comment\n\n   \n  # indented comment\nbrpc_http_port = 9000   # why\nlocal_ip=10.0.0.1\n")
        .unwrap();
    assert_eq!(c.http_port, 9000);
    assert_eq!(c.local_ip, "10.0.0.1");
}

#[test]
fn unknown_key_names_file_and_line() {
    assert_eq!(
        err("\n# c\nbrpc_http_prt = 8010\n"),
        "test.cnf:3: unknown key \"brpc_http_prt\""
    );
}

#[test]
fn removed_key_is_named() {
    assert!(err("meta_host = 127.0.0.1\n")
        .starts_with("test.cnf:1: key meta_host is no longer supported"));
}

#[test]
fn duplicate_key_names_both_lines() {
    assert_eq!(
        err("brpc_http_port = 9000\n\nbrpc_http_port = 9001\n"),
        "test.cnf:3: duplicate key brpc_http_port (first set at test.cnf:1)"
    );
}

#[test]
fn line_without_equals_is_refused() {
    assert_eq!(
        err("brpc_http_port 8010\n"),
        "test.cnf:1: expected `name = value`"
    );
    assert!(err("= 5\n").starts_with("test.cnf:1: missing key name"));
}

#[test]
fn text_after_the_value_is_refused() {
    assert!(err("local_ip = 10.0.0.1 10.0.0.2\n").contains("unexpected text after the value"));
}

#[test]
fn missing_number_is_refused() {
    assert_eq!(
        err("brpc_http_port =\n"),
        "test.cnf:1: brpc_http_port: missing value"
    );
    assert_eq!(
        err("brpc_http_port = # none\n"),
        "test.cnf:1: brpc_http_port: missing value"
    );
}

#[test]
fn non_numbers_are_refused() {
    assert!(err("brpc_http_port = abc\n").contains("\"abc\" is not a whole number"));
    assert!(err("brpc_http_port = -1\n").contains("not a whole number"));
    assert!(err("num_worker_threads = 3.5\n").contains("not a whole number"));
    assert!(err("check_shard_interval = 1e3\n").contains("is not a number"));
    assert!(err("check_shard_interval = NaN\n").contains("is not a number"));
}

#[test]
fn out_of_range_values_are_refused_with_the_range() {
    assert_eq!(
        err("brpc_http_port = 999\n"),
        "test.cnf:1: brpc_http_port: 999 is out of range 1000..=65535"
    );
    assert!(err("brpc_http_port = 65536\n").contains("out of range"));
    assert!(err("brpc_http_port = 99999999999999999999999\n").contains("out of range"));
    assert!(err("commit_log_retention_hours = 23\n").contains("24..=720"));
    assert!(err("mysql_max_packet_size = 1073741825\n").contains("out of range"));
    assert!(err("check_shard_interval = 0.05\n").contains("out of range"));
    assert!(err("check_shard_interval = 101\n").contains("out of range"));
    assert!(err("num_worker_threads = 0\n").contains("1..=100"));
}

#[test]
fn range_bounds_are_accepted() {
    let c =
        parse("brpc_http_port = 1000\nmysql_max_packet_size = 65535\nstatement_retries = 10000\n")
            .unwrap();
    assert_eq!(c.http_port, 1000);
    assert_eq!(c.mysql_max_packet_size, 65535);
    assert_eq!(c.statement_retries, 10000);
}

#[test]
fn check_shard_interval_allows_sub_second() {
    let c = parse("check_shard_interval = 0.5\n").unwrap();
    assert_eq!(c.check_shard_interval, Duration::from_millis(500));
}

#[test]
fn machine_check_interval_defaults_to_10_s_and_0_turns_it_off() {
    assert_eq!(
        parse("").unwrap().machine_check_interval,
        Duration::from_secs(10)
    );
    let c = parse("machine_check_interval = 0.5\n").unwrap();
    assert_eq!(c.machine_check_interval, Duration::from_millis(500));
    assert!(parse("machine_check_interval = 0\n")
        .unwrap()
        .machine_check_interval
        .is_zero());
    assert!(err("machine_check_interval = -1\n").contains("is not a number"));
    assert!(err("machine_check_interval = 3601\n").contains("out of range"));
}

#[test]
fn leader_lease_defaults_to_10_s_and_refuses_0_and_absurd_values() {
    assert_eq!(parse("").unwrap().leader_lease, Duration::from_secs(10));
    assert_eq!(
        parse("leader_lease_secs = 2.5\n").unwrap().leader_lease,
        Duration::from_millis(2500)
    );
    for bad in ["0", "1.9", "301", "100000"] {
        let e = err(&format!("leader_lease_secs = {bad}\n"));
        assert!(
            e.contains("test.cnf:1") && e.contains("out of range"),
            "{bad}: {e}"
        );
    }
    assert!(err("leader_lease_secs = ten\n").contains("is not a number"));
    assert!(err("leader_lease_secs =\n").contains("leader_lease_secs"));
}

#[test]
fn choice_keys_take_only_their_words() {
    assert_eq!(
        err("meta_backend = postgres\n"),
        "test.cnf:1: meta_backend: \"postgres\" is not one of sqlite, mysql"
    );
    assert!(err("log_format = yaml\n").contains("text, json"));
    assert_eq!(
        parse("log_format = json\n").unwrap().log_format,
        LogFormat::Json
    );
}

#[test]
fn mysql_backend_requires_seeds_user_and_password() {
    assert!(err("meta_backend = mysql\nmeta_user = u\nmeta_pwd = p\n")
        .contains("requires meta_group_seeds"));
    assert!(
        err("meta_backend = mysql\nmeta_group_seeds = 127.0.0.1:3306\nmeta_pwd = p\n")
            .contains("requires meta_user")
    );
    assert!(
        err("meta_backend = mysql\nmeta_group_seeds = 127.0.0.1:3306\nmeta_user = u\n")
            .contains("requires meta_pwd")
    );
    let c = parse("meta_backend = mysql\nmeta_group_seeds = 127.0.0.1:3306,db2:3307\nmeta_user = u\nmeta_pwd =\n").unwrap();
    assert_eq!(c.meta_backend, MetaBackend::Mysql);
    assert_eq!(c.meta_group_seeds, vec!["127.0.0.1:3306", "db2:3307"]);
    assert_eq!(c.meta_pwd, "");
}

#[test]
fn sqlite_backend_needs_no_meta_credentials() {
    assert_eq!(
        parse("meta_backend = sqlite\n").unwrap().meta_group_seeds,
        Vec::<String>::new()
    );
}

#[test]
fn bad_seeds_are_refused() {
    assert!(err("meta_group_seeds = 127.0.0.1\n").contains("is not host:port"));
    assert!(err("meta_group_seeds = 127.0.0.1:0\n").contains("is not host:port"));
    assert!(err("meta_group_seeds = bad;host:3306\n").contains("meta_group_seeds"));
}

#[test]
fn bad_addresses_are_refused() {
    assert!(err("http_bind_address = localhost\n").contains("is not an IP address"));
    assert!(err("local_ip = 'x'\n").contains("local_ip"));
    assert!(err("raft_group_member_init_config = 127.0.0.1:8110\n").contains("ip:port:index"));
    assert!(err("meta_database = kunlun-db\n").contains("meta_database"));
    assert!(err("meta_user = a;b\n").contains("meta_user"));
}

#[test]
fn debug_redacts_the_password() {
    let c = parse("meta_pwd = s3cr3t-pw\n").unwrap();
    assert_eq!(c.meta_pwd, "s3cr3t-pw");
    let d = format!("{c:?}");
    assert!(!d.contains("s3cr3t-pw"), "{d}");
    assert!(d.contains("<redacted>"));
}

#[test]
fn flags_override_the_file_and_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.cnf");
    std::fs::write(
        &path,
        "brpc_http_port = 9000\nhttp_bind_address = 0.0.0.0\nauth = tokens\n\
         http_allow_plaintext = true\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let args = Args::parse_from([
        "cluster-mgr",
        "--config",
        p,
        "--http-port",
        "9100",
        "--log-format",
        "json",
    ]);
    let c = Config::load(&args).unwrap();
    assert_eq!(c.http_port, 9100);
    assert_eq!(c.http_bind_address.to_string(), "0.0.0.0");
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.config_file.as_deref(), Some(path.as_path()));

    let args = Args::parse_from(["cluster-mgr", p, "--http-port", "80"]);
    assert_eq!(
        Config::load(&args).unwrap_err().to_string(),
        "--http-port: brpc_http_port: 80 is out of range 1000..=65535"
    );

    let args = Args::parse_from([
        "cluster-mgr",
        "--meta-backend",
        "mysql",
        "--meta-group-seeds",
        "h:1",
        "--meta-user",
        "u",
    ]);
    assert!(Config::load(&args)
        .unwrap_err()
        .to_string()
        .contains("requires meta_pwd"));
}

#[test]
fn no_arguments_gives_the_defaults() {
    let c = Config::load(&Args::parse_from(["cluster-mgr"])).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let args = Args::parse_from(["cluster-mgr", "--config", "/nonexistent/cluster_mgr.cnf"]);
    let e = Config::load(&args).unwrap_err().to_string();
    assert!(
        e.starts_with("/nonexistent/cluster_mgr.cnf: cannot read"),
        "{e}"
    );
}

#[test]
fn the_sample_file_is_accepted_and_documents_every_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../cluster_mgr.cnf");
    let text = std::fs::read_to_string(path).unwrap();
    parse(&text).unwrap_or_else(|e| panic!("sample refused: {e}"));
    for spec in KEYS {
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{} =", spec.name))
        });
        assert!(
            documented,
            "sample cluster_mgr.cnf does not mention {}",
            spec.name
        );
    }
}

#[test]
fn a_non_loopback_bind_needs_tokens() {
    let e = err("http_bind_address = 0.0.0.0\n");
    assert!(
        e.contains("not a loopback address") && e.contains("auth = tokens"),
        "{e}"
    );
    let c = cfg("http_bind_address = 0.0.0.0\nauth = tokens\nhttp_allow_plaintext = true\n");
    assert_eq!(c.auth, AuthMode::Tokens);
    assert_eq!(cfg("http_bind_address = ::1\n").auth, AuthMode::Auto);
}

#[test]
fn a_non_loopback_bind_needs_tls_or_an_explicit_plaintext_override() {
    let e = err("http_bind_address = 0.0.0.0\nauth = tokens\n");
    assert!(
        e.contains("http_tls_cert")
            && e.contains("http_tls_key")
            && e.contains("http_allow_plaintext = true"),
        "{e}"
    );
    let c = cfg("http_bind_address = 10.0.0.5\nauth = tokens\nhttp_allow_plaintext = true\n");
    assert!(c.http_allow_plaintext && c.http_tls.is_none());
    let c = cfg(
        "http_bind_address = 0.0.0.0\nauth = tokens\nhttp_tls_cert = /etc/km/api.crt\n\
         http_tls_key = /etc/km/api.key\n",
    );
    let tls = c.http_tls.expect("tls files");
    assert_eq!(tls.cert.to_str(), Some("/etc/km/api.crt"));
    assert_eq!(tls.key.to_str(), Some("/etc/km/api.key"));
    assert_eq!(tls.client_ca, None);
    // Loopback needs neither; plain HTTP stays the quickstart's default.
    assert_eq!(cfg("").http_tls, None);
    assert!(err("http_allow_plaintext = yes\n").contains("http_allow_plaintext"));
}

#[test]
fn tls_files_come_in_pairs_and_client_ca_needs_them() {
    let e = err("http_tls_cert = /a.crt\n");
    assert!(
        e.contains("http_tls_key is not") && e.starts_with("test.cnf:1"),
        "{e}"
    );
    let e = err("\nhttp_tls_key = /a.key\n");
    assert!(
        e.contains("http_tls_cert is not") && e.starts_with("test.cnf:2"),
        "{e}"
    );
    let e = err("http_tls_client_ca = /ca.pem\n");
    assert!(e.contains("needs http_tls_cert and http_tls_key"), "{e}");
    let c = cfg("http_tls_cert = /a.crt\nhttp_tls_key = /a.key\nhttp_tls_client_ca = /ca.pem\n");
    assert_eq!(
        c.http_tls.and_then(|t| t.client_ca).as_deref(),
        Some(std::path::Path::new("/ca.pem"))
    );
}

#[test]
fn allowed_hosts_default_to_the_bind_address_and_loopback_names() {
    let c = cfg("brpc_http_port = 9000\nlocal_ip = 10.0.0.5\n");
    assert_eq!(
        c.allowed_hosts(),
        [
            "127.0.0.1:9000",
            "10.0.0.5:9000",
            "localhost:9000",
            "[::1]:9000"
        ]
    );
    let c = cfg("http_allowed_hosts = Mgr.example:8010,10.0.0.5\n");
    assert_eq!(c.allowed_hosts(), ["mgr.example:8010", "10.0.0.5"]);
    assert!(err("http_allowed_hosts = bad_host!\n").contains("http_allowed_hosts"));
}

#[test]
fn job_retention_zero_keeps_jobs() {
    assert_eq!(cfg("job_retention_days = 0\n").job_retention, None);
    assert_eq!(
        cfg("").job_retention,
        Some(std::time::Duration::from_secs(30 * 86_400))
    );
}

#[test]
fn ssh_keys_dir_defaults_under_the_data_path_and_host_keys_are_strict() {
    let c = cfg("cluster_mgr_tmp_data_path = /var/lib/kl\n");
    assert_eq!(c.ssh_keys_dir, std::path::PathBuf::from("/var/lib/kl/keys"));
    assert!(!c.ssh_host_key_accept_new, "strict by default");
    let c = cfg("ssh_keys_dir = /etc/kunlun/keys\nssh_host_key_policy = accept-new\n");
    assert_eq!(c.ssh_keys_dir, std::path::PathBuf::from("/etc/kunlun/keys"));
    assert!(c.ssh_host_key_accept_new);
    assert!(err("ssh_keys_dir = keys\n").contains("absolute"));
    assert!(err("ssh_host_key_policy = tofu\n").contains("ssh_host_key_policy"));
}

fn cfg(text: &str) -> Config {
    parse(text).expect("config should be accepted")
}

#[test]
fn database_tls_defaults_to_prefer_and_verify_needs_a_readable_pem_ca() {
    use kunlun_meta::TlsMode;
    let c = cfg("");
    assert_eq!(c.meta_tls.mode(), TlsMode::Prefer);
    assert_eq!(c.catalog_tls.mode(), TlsMode::Prefer);
    assert_eq!(cfg("meta_tls = off\n").meta_tls.mode(), TlsMode::Off);
    assert!(err("meta_tls = verify\n").contains("requires meta_tls_ca"));
    assert!(err("catalog_tls = verify\n").contains("requires catalog_tls_ca"));
    assert!(err("meta_tls = maybe\n").contains("meta_tls"));
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = err(&format!(
        "catalog_tls = verify\ncatalog_tls_ca = {}\n",
        missing.display()
    ));
    assert!(
        e.contains("catalog_tls_ca") && e.contains("missing.pem"),
        "{e}"
    );
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let c = cfg(&format!(
        "meta_tls = verify\nmeta_tls_ca = {}\n",
        ca.display()
    ));
    assert_eq!(c.meta_tls.mode(), TlsMode::Verify);
    assert_eq!(c.meta_tls.ca(), Some(ca.as_path()));
}
