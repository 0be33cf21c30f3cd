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
fn keys_of_the_original_we_do_not_use_are_ignored_with_a_warning() {
    let c = cfg("log_verbosity = INFO\n\ncluster_mgr_http_port = 5000   # old\nhdfs_server_ip =\n");
    assert_eq!(
        c.http_port, 8010,
        "cluster_mgr_http_port is not brpc_http_port"
    );
    assert_eq!(
        c.warnings,
        [
            "test.cnf:1: ignored: log_verbosity is not used by this cluster manager",
            "test.cnf:3: ignored: cluster_mgr_http_port is not used by this cluster manager",
            "test.cnf:4: ignored: hdfs_server_ip is not used by this cluster manager",
        ]
    );
}

#[test]
fn meta_host_without_seeds_is_refused_naming_meta_group_seeds() {
    let e = err("# old\nmeta_host = 10.0.0.1\nmeta_port = 6001\n");
    assert!(
        e.starts_with("test.cnf:2: meta_host names the old single metadata server")
            && e.contains("use `meta_group_seeds = host:port` (here: 10.0.0.1:6001)")
            && e.contains("empty SQLite store"),
        "{e}"
    );
    let e = err("meta_port = 6001\n");
    assert!(
        e.starts_with("test.cnf:1: meta_port") && e.contains("meta_group_seeds = host:port"),
        "{e}"
    );
    // `meta_backend = mysql` without seeds hears about meta_host, the line to fix.
    let e = err("meta_backend = mysql\nmeta_host = ::1\nmeta_port = 6001\n");
    assert!(e.contains("(here: [::1]:6001)"), "{e}");
}

#[test]
fn meta_host_with_seeds_or_an_explicit_sqlite_backend_is_ignored_with_a_warning() {
    let c = cfg(
        "meta_host = 10.0.0.1\nmeta_group_seeds = 10.0.0.1:6001\nmeta_user = u\nmeta_pwd = p\n",
    );
    assert_eq!(c.meta_backend, MetaBackend::Mysql);
    assert_eq!(c.meta_group_seeds, ["10.0.0.1:6001"]);
    assert!(c.warnings.contains(
        &"test.cnf:1: ignored: meta_host is not used by this cluster manager \
          (meta_group_seeds names the metadata shard)"
            .to_string()
    ));
    let c = cfg("meta_backend = sqlite\nmeta_host = 10.0.0.1\n");
    assert_eq!(c.meta_backend, MetaBackend::Sqlite);
    assert_eq!(
        c.warnings,
        [
            "test.cnf:2: ignored: meta_host is not used by this cluster manager \
          (meta_backend = sqlite)"
        ]
    );
}

#[test]
fn a_repeated_key_takes_the_last_value_with_a_warning_naming_both_lines() {
    let c = cfg("brpc_http_port = 9000\n\nbrpc_http_port = 9001\nbrpc_http_port=9002\n");
    assert_eq!(c.http_port, 9002);
    assert_eq!(
        c.warnings,
        [
            "test.cnf:3: brpc_http_port is set again (before at test.cnf:1): this value is \
             used, the earlier one ignored, as the original cluster_mgr does",
            "test.cnf:4: brpc_http_port is set again (before at test.cnf:3): this value is \
             used, the earlier one ignored, as the original cluster_mgr does",
        ]
    );
    // The value used is the one checked.
    assert!(err("brpc_http_port = 9000\nbrpc_http_port = 80\n").starts_with("test.cnf:2:"));
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
fn text_after_the_value_is_ignored_with_a_warning() {
    let c = cfg("# x\nlocal_ip = 10.0.0.1 10.0.0.2  # two\n");
    assert_eq!(c.local_ip, "10.0.0.1");
    assert_eq!(
        c.warnings,
        [
            "test.cnf:2: local_ip: the text after the value is ignored: \"10.0.0.2  # two\" (the \
          value is the first word, \"10.0.0.1\", as the original cluster_mgr reads it)"
        ]
    );
    // A trailing comment alone is silent.
    assert_eq!(
        cfg("local_ip = 10.0.0.1 # mine\n").warnings,
        Vec::<String>::new()
    );
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
fn the_instance_keeper_runs_every_5_s_by_default_and_0_turns_it_off() {
    let c = parse("").unwrap();
    assert_eq!(c.keeper_interval, Duration::from_secs(5));
    assert_eq!(c.keeper_max_restarts, 3);
    assert_eq!(c.keeper_restart_window, Duration::from_secs(600));
    let c = parse(
        "instance_keeper_interval_secs = 0.5\nkeeper_max_restarts = 5\nkeeper_restart_window_secs = 60\n",
    )
    .unwrap();
    assert_eq!(c.keeper_interval, Duration::from_millis(500));
    assert_eq!(c.keeper_max_restarts, 5);
    assert_eq!(c.keeper_restart_window, Duration::from_secs(60));
    assert!(parse("instance_keeper_interval_secs = 0\n")
        .unwrap()
        .keeper_interval
        .is_zero());
    assert!(err("keeper_max_restarts = 0\n").contains("out of range"));
    assert!(err("keeper_restart_window_secs = 5\n").contains("out of range"));
    assert!(err("instance_keeper_interval_secs = 3601\n").contains("out of range"));
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
fn warnings_never_quote_the_password() {
    // A password with a space: the original keeps the first word; neither half may be logged.
    let c = cfg("meta_pwd = s3cr3t-pw other-half\nmeta_pwd = s3cr3t-pw2\n");
    assert_eq!(c.meta_pwd, "s3cr3t-pw2");
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("not shown"), "{:?}", c.warnings);
    let d = format!("{c:?}");
    for secret in ["s3cr3t", "other-half"] {
        assert!(!d.contains(secret), "{d}");
    }
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

const ORIGINAL_SAMPLE: &str = include_str!("original_sample.cnf");

#[test]
fn the_original_kunlunbase_sample_is_accepted_as_it_is() {
    let c = Config::from_cnf_text(ORIGINAL_SAMPLE, "cluster_mgr.cnf")
        .unwrap_or_else(|e| panic!("the original's sample refused: {e}"));
    assert_eq!(c.meta_backend, MetaBackend::Mysql);
    assert_eq!(
        c.meta_group_seeds,
        [
            "192.168.0.128:58100",
            "192.168.0.128:58103",
            "192.168.0.128:58106"
        ]
    );
    assert_eq!(c.meta_user, "pgx");
    assert_eq!(c.meta_pwd, "pgx_pwd");
    assert_eq!(c.http_port, 58000);
    assert_eq!(c.raft_port, 58001);
    assert_eq!(c.num_worker_threads, 5);
    assert_eq!(c.check_shard_interval, Duration::from_secs(3));
    assert_eq!(c.statement_retry_interval, Duration::from_millis(1000));
    assert_eq!(c.mysql_connect_timeout, Duration::from_secs(3));
    assert_eq!(
        c.log_file.as_deref(),
        Some(Path::new("../log/sys_cluster_mgr.log"))
    );
    assert_eq!(c.tmp_data_path, Path::new("../data"));
    assert_eq!(c.prometheus_port_start, 58010);

    let line_of = |key: &str| {
        ORIGINAL_SAMPLE
            .lines()
            .position(|l| l.starts_with(&format!("{key} =")))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{key} not in the sample"))
    };
    let mut expected = vec![(
        line_of("meta_group_seeds"),
        "meta_backend not set; meta_group_seeds given: using the MySQL metadata shard (as the \
         original cluster_mgr does)"
            .to_string(),
    )];
    for key in [
        "log_verbosity",
        "program_binaries_path",
        "instance_binaries_path",
        "storage_prog_package_name",
        "computer_prog_package_name",
        "computer_instance_port_start",
        "storage_instance_port_start",
    ] {
        expected.push((
            line_of(key),
            format!("ignored: {key} is not used by this cluster manager"),
        ));
    }
    expected.sort();
    let expected: Vec<String> = expected
        .into_iter()
        .map(|(line, w)| format!("cluster_mgr.cnf:{line}: {w}"))
        .collect();
    assert_eq!(c.warnings, expected);
    assert!(!format!("{c:?}").contains("pgx_pwd"));
}

#[test]
fn seeds_without_meta_backend_mean_mysql_and_name_what_mysql_still_needs() {
    let c = cfg("meta_group_seeds = 10.0.0.1:6001\nmeta_user = u\nmeta_pwd =\n");
    assert_eq!(c.meta_backend, MetaBackend::Mysql);
    assert_eq!(
        c.warnings,
        [
            "test.cnf:1: meta_backend not set; meta_group_seeds given: using the MySQL metadata \
          shard (as the original cluster_mgr does)"
        ]
    );
    let e = err("meta_user = u\nmeta_group_seeds = 10.0.0.1:6001\n");
    assert!(
        e.starts_with("test.cnf:2: meta_group_seeds without meta_backend")
            && e.contains("requires meta_pwd")
            && e.contains("meta_backend = sqlite"),
        "{e}"
    );
    // Seeds from a flag infer the same; the notice names the flag.
    let args = Args::parse_from([
        "cluster-mgr",
        "--meta-group-seeds",
        "h:1",
        "--meta-user",
        "u",
    ]);
    let e = Config::load(&args).unwrap_err().to_string();
    assert!(
        e.starts_with("--meta-group-seeds: ") && e.contains("requires meta_pwd"),
        "{e}"
    );
}

#[test]
fn explicit_sqlite_backend_with_seeds_stays_sqlite() {
    let c = cfg("meta_backend = sqlite\nmeta_group_seeds = 10.0.0.1:6001\n");
    assert_eq!(c.meta_backend, MetaBackend::Sqlite);
    assert_eq!(c.meta_group_seeds, ["10.0.0.1:6001"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let args = Args::parse_from([
        "cluster-mgr",
        "--meta-backend",
        "sqlite",
        "--meta-group-seeds",
        "h:1",
    ]);
    assert_eq!(
        Config::load(&args).unwrap().meta_backend,
        MetaBackend::Sqlite
    );
}

#[test]
fn emit_and_machine_ssh_keys_have_their_defaults() {
    let c = cfg("");
    assert!(c.emit_allowed_clients.is_empty());
    assert_eq!(c.machine_ssh_user, "root");
    assert_eq!(c.machine_ssh_port, 22);
    assert_eq!(c.machine_ssh_key, None);
    assert!(c.warnings.is_empty());
}

#[test]
fn emit_and_machine_ssh_keys_parse() {
    let c = cfg("ssh_keys_dir = /etc/kunlun/keys\n\
         emit_allowed_clients = 127.0.0.1,10.0.0.0/8,fd00::/8,::1,127.0.0.1,\n\
         machine_ssh_user = kunlun\nmachine_ssh_port = 2222\n\
         machine_ssh_key = /etc/kunlun/keys/id_ed25519\n");
    let blocks: Vec<String> = c
        .emit_allowed_clients
        .iter()
        .map(|b| b.to_string())
        .collect();
    assert_eq!(blocks, ["127.0.0.1", "10.0.0.0/8", "fd00::/8", "::1"]);
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(c
        .emit_allowed_clients
        .iter()
        .any(|b| b.contains(ip("10.2.3.4"))));
    assert!(!c
        .emit_allowed_clients
        .iter()
        .any(|b| b.contains(ip("192.168.0.1"))));
    assert_eq!(c.machine_ssh_user, "kunlun");
    assert_eq!(c.machine_ssh_port, 2222);
    assert_eq!(
        c.machine_ssh_key.as_deref(),
        Some(Path::new("/etc/kunlun/keys/id_ed25519"))
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // As every value, the list ends at the first space; the rest is warned about.
    let c = cfg("emit_allowed_clients = 127.0.0.1, 10.0.0.0/8\n");
    assert_eq!(c.emit_allowed_clients.len(), 1);
    assert!(c.warnings[0].contains("\"10.0.0.0/8\""), "{:?}", c.warnings);
}

#[test]
fn bad_emit_and_machine_ssh_values_are_refused_naming_the_line() {
    let e = err("\nemit_allowed_clients = 127.0.0.1,localhost\n");
    assert!(
        e.starts_with("test.cnf:2: emit_allowed_clients: \"localhost\" is not an IP address"),
        "{e}"
    );
    let e = err("emit_allowed_clients = 10.0.0.0/33\n");
    assert!(
        e.starts_with("test.cnf:1: emit_allowed_clients") && e.contains("0..=32"),
        "{e}"
    );
    let e = err("emit_allowed_clients = 10.0.0.1/8\n");
    assert!(e.contains("write 10.0.0.0/8"), "{e}");
    let e = err("# a\n# b\nmachine_ssh_user = ro ot\nmachine_ssh_user = r;oot\n");
    assert!(e.starts_with("test.cnf:4: machine_ssh_user"), "{e}");
    assert!(err("machine_ssh_user =\n").contains("machine_ssh_user: missing value"));
    assert_eq!(
        err("machine_ssh_port = 0\n"),
        "test.cnf:1: machine_ssh_port: 0 is out of range 1..=65535"
    );
    assert!(err("machine_ssh_port = 65536\n").contains("out of range"));
    assert!(err("machine_ssh_port = ssh\n").contains("not a whole number"));
    let e = err("\nmachine_ssh_key = keys/id_rsa\n");
    assert!(
        e.starts_with("test.cnf:2: machine_ssh_key") && e.contains("absolute"),
        "{e}"
    );
    assert!(err("machine_ssh_key = /etc/../id_rsa\n").contains("'..'"));
}

#[test]
fn emit_keys_warn_about_an_open_block_and_a_key_outside_ssh_keys_dir() {
    let c = cfg(
        "emit_allowed_clients = 0.0.0.0/0\nssh_keys_dir = /etc/kunlun/keys\n\
                 machine_ssh_key = /root/.ssh/id_rsa\n",
    );
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(
        c.warnings[0].starts_with("test.cnf:1: emit_allowed_clients: 0.0.0.0/0 lets every client"),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings[1].starts_with(
            "test.cnf:3: machine_ssh_key /root/.ssh/id_rsa is not under \
                                   ssh_keys_dir /etc/kunlun/keys"
        ),
        "{:?}",
        c.warnings
    );
}

#[test]
fn clusters_to_serve_defaults_to_every_cluster_and_takes_a_comma_list() {
    assert!(cfg("").clusters_to_serve.serves_all());
    assert!(cfg("clusters_to_serve =\n").clusters_to_serve.serves_all());
    let c = cfg("clusters_to_serve = 3,1,20\n").clusters_to_serve;
    assert_eq!(c.ids(), vec![1, 3, 20]);
    assert!(c.serves(20) && !c.serves(2));
}

#[test]
fn bad_clusters_to_serve_names_file_line_and_value() {
    for (text, says) in [
        ("clusters_to_serve = 1,x\n", "\"x\" is not a cluster id"),
        ("clusters_to_serve = 1,,2\n", "\"\" is not a cluster id"),
        ("clusters_to_serve = 0\n", "0 is not a cluster id"),
        ("clusters_to_serve = -4\n", "-4 is not a cluster id"),
        ("clusters_to_serve = 2,2\n", "cluster 2 is listed twice"),
        (
            "clusters_to_serve = 99999999999999999999\n",
            "is not a cluster id",
        ),
    ] {
        let e = err(&format!("# a comment\n{text}"));
        assert!(e.contains(":2") && e.contains(says), "{text}: {e}");
    }
    // `1, 2` ends at the space, as the original reads values: the `1,` left is refused.
    let e = err("clusters_to_serve = 1, 2\n");
    assert!(e.contains("without spaces"), "{e}");
    let many: Vec<String> = (1..=4097).map(|i| i.to_string()).collect();
    let e = err(&format!("clusters_to_serve = {}\n", many.join(",")));
    assert!(e.contains("at most 4096"), "{e}");
    let long = format!("clusters_to_serve = {}\n", "1".repeat(90_000));
    assert!(err(&long).contains("characters, at most"));
}

#[test]
fn managers_with_one_list_share_a_lease_and_other_lists_lead_apart() {
    let name = |text: &str| crate::server::lease_name(&cfg(text).clusters_to_serve);
    assert_eq!(name(""), "cluster_mgr");
    let a = name("clusters_to_serve = 2,1\n");
    assert_eq!(
        a,
        name("clusters_to_serve = 1,2\n"),
        "order does not matter"
    );
    assert_ne!(a, name("clusters_to_serve = 1,3\n"));
    assert!(a.starts_with("cluster_mgr@") && a.len() <= 64, "{a}");
}
