//! Turns [`Raw`] settings into a [`Config`]: every value checked against its key's kind and
//! range, then the rules that span keys. Errors name the origin of the offending value; what is
//! accepted but worth a word (the original's leniencies) becomes [`Config::warnings`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keys::{self, Kind};
use super::raw::{Origin, Raw, Setting, Warning};
use super::{AuthMode, Config, ConfigError, IpBlock, LogFormat, MetaBackend, TlsFiles};

/// Typed access to the raw settings.
struct Reader<'a> {
    raw: &'a Raw,
}

impl Reader<'_> {
    fn setting(&self, name: &str) -> Result<(Setting, &'static keys::KeySpec), ConfigError> {
        let spec = keys::spec(name).ok_or_else(|| ConfigError {
            location: "internal".into(),
            reason: format!("key {name} is missing from the key table"),
        })?;
        Ok((self.raw.get(spec), spec))
    }

    fn int(&self, name: &str) -> Result<i64, ConfigError> {
        let (s, spec) = self.setting(name)?;
        let Kind::Int { min, max } = spec.kind else {
            return Err(not_kind(name, "an integer"));
        };
        let err = |why: String| ConfigError::at(&s.origin, format!("{name}: {why}"));
        if s.value.is_empty() {
            return Err(err("missing value".into()));
        }
        if !s.value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(format!("{:?} is not a whole number", s.value)));
        }
        let v: i64 = s
            .value
            .parse()
            .map_err(|_| err(format!("{} is out of range {min}..={max}", s.value)))?;
        if v < min || v > max {
            return Err(err(format!("{v} is out of range {min}..={max}")));
        }
        Ok(v)
    }

    fn u16(&self, name: &str) -> Result<u16, ConfigError> {
        let v = self.int(name)?;
        u16::try_from(v).map_err(|_| not_kind(name, "a port"))
    }

    fn u32(&self, name: &str) -> Result<u32, ConfigError> {
        let v = self.int(name)?;
        u32::try_from(v).map_err(|_| not_kind(name, "a 32-bit number"))
    }

    fn secs(&self, name: &str) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.int(name)?.unsigned_abs()))
    }

    fn float(&self, name: &str) -> Result<f64, ConfigError> {
        let (s, spec) = self.setting(name)?;
        let Kind::Float { min, max } = spec.kind else {
            return Err(not_kind(name, "a number"));
        };
        let err = |why: String| ConfigError::at(&s.origin, format!("{name}: {why}"));
        let ok_chars =
            !s.value.is_empty() && s.value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let v: f64 = match s.value.parse() {
            Ok(v) if ok_chars => v,
            _ => return Err(err(format!("{:?} is not a number", s.value))),
        };
        if !(min..=max).contains(&v) {
            return Err(err(format!("{v} is out of range {min}..={max}")));
        }
        Ok(v)
    }

    fn text(&self, name: &str) -> Result<Setting, ConfigError> {
        let (s, spec) = self.setting(name)?;
        match spec.kind {
            Kind::Text { allow_empty } => {
                if !allow_empty && s.value.is_empty() {
                    return Err(ConfigError::at(&s.origin, format!("{name}: missing value")));
                }
                Ok(s)
            }
            Kind::Choice(words) => {
                if words.contains(&s.value.as_str()) {
                    Ok(s)
                } else {
                    Err(ConfigError::at(
                        &s.origin,
                        format!("{name}: {:?} is not one of {}", s.value, words.join(", ")),
                    ))
                }
            }
            _ => Err(not_kind(name, "text")),
        }
    }
}

fn not_kind(name: &str, what: &str) -> ConfigError {
    ConfigError {
        location: "internal".into(),
        reason: format!("key {name} is not {what}"),
    }
}

/// A host name or IP literal (as `kunlun_meta::validate::hostaddr` accepts).
fn host(s: &Setting, name: &str, v: &str) -> Result<(), ConfigError> {
    kunlun_meta::validate::hostaddr(name, v).map_err(|e| ConfigError::at(&s.origin, e.to_string()))
}

/// `host:port` with a port in 1..=65535.
fn host_port(s: &Setting, name: &str, v: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::at(&s.origin, format!("{name}: {v:?} is not host:port"));
    let (h, p) = v.rsplit_once(':').ok_or_else(bad)?;
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    host(s, name, h)?;
    match p.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

/// `http_tls_cert` and `http_tls_key` (both or neither) and `http_tls_client_ca` (only with
/// them). Only the names are checked here; the files are read by `crate::tls::load`.
fn tls_files(r: &Reader<'_>) -> Result<Option<TlsFiles>, ConfigError> {
    let cert = r.text("http_tls_cert")?;
    let key = r.text("http_tls_key")?;
    let ca = r.text("http_tls_client_ca")?;
    match (cert.value.is_empty(), key.value.is_empty()) {
        (true, true) => {
            if !ca.value.is_empty() {
                return Err(ConfigError::at(
                    &ca.origin,
                    "http_tls_client_ca needs http_tls_cert and http_tls_key",
                ));
            }
            Ok(None)
        }
        (false, false) => Ok(Some(TlsFiles {
            cert: PathBuf::from(cert.value),
            key: PathBuf::from(key.value),
            client_ca: Some(ca.value).filter(|v| !v.is_empty()).map(PathBuf::from),
        })),
        (false, true) => Err(ConfigError::at(
            &cert.origin,
            "http_tls_cert is set but http_tls_key is not: set both or neither",
        )),
        (true, false) => Err(ConfigError::at(
            &key.origin,
            "http_tls_key is set but http_tls_cert is not: set both or neither",
        )),
    }
}

/// `<key>` (a TLS mode) with `<key>_ca`: `verify` needs the CA file, which must hold PEM
/// certificates (read now, so a wrong path fails at start, naming the key).
fn tls_settings(r: &Reader<'_>, key: &str) -> Result<kunlun_meta::TlsSettings, ConfigError> {
    let mode_setting = r.text(key)?;
    let mode: kunlun_meta::TlsMode =
        mode_setting
            .value
            .parse()
            .map_err(|e: kunlun_meta::Error| {
                ConfigError::at(&mode_setting.origin, format!("{key}: {e}"))
            })?;
    let ca_key = format!("{key}_ca");
    let ca_setting = r.text(&ca_key)?;
    let ca = Some(ca_setting.value.trim())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let settings = kunlun_meta::TlsSettings::new(mode, ca).map_err(|_| {
        ConfigError::at(
            &mode_setting.origin,
            format!("{key} = verify requires {ca_key} (the CA certificate, PEM)"),
        )
    })?;
    if mode == kunlun_meta::TlsMode::Verify {
        settings
            .read_ca(&ca_key)
            .map_err(|e| ConfigError::at(&ca_setting.origin, e.to_string()))?;
    }
    Ok(settings)
}

/// The keys of [`keys::REMOVED_KEYS`] the file set: each ignored with a warning, except
/// `meta_host`/`meta_port` when nothing else names the metadata store. Those two named the
/// original's single metadata server before `meta_group_seeds`; dropping them silently would
/// start this manager on an empty SQLite store, and the user would think their metadata lost.
fn removed_keys(
    raw: &Raw,
    seeds_given: bool,
    sqlite_chosen: bool,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let value_of = |name: &str| {
        raw.ignored()
            .iter()
            .rev()
            .find(|i| i.name == name && !i.value.is_empty())
            .map(|i| i.value.as_str())
    };
    for ig in raw.ignored() {
        let old_meta = matches!(ig.name, "meta_host" | "meta_port");
        if old_meta && !seeds_given && !sqlite_chosen {
            let example = match (value_of("meta_host"), value_of("meta_port")) {
                (Some(h), Some(p)) if h.contains(':') => format!(" (here: [{h}]:{p})"),
                (Some(h), Some(p)) => format!(" (here: {h}:{p})"),
                _ => String::new(),
            };
            return Err(ConfigError::at(
                &ig.origin,
                format!(
                    "{} names the old single metadata server, which this cluster manager does \
                     not read: use `meta_group_seeds = host:port`{example} instead (without \
                     it cluster-mgr would start on an empty SQLite store, not your metadata); \
                     `meta_backend = sqlite` starts on SQLite on purpose",
                    ig.name
                ),
            ));
        }
        let why = match (old_meta, sqlite_chosen) {
            (false, _) => "",
            (true, true) => " (meta_backend = sqlite)",
            (true, false) => " (meta_group_seeds names the metadata shard)",
        };
        warnings.push(Warning {
            origin: ig.origin.clone(),
            message: format!(
                "ignored: {} is not used by this cluster manager{why}",
                ig.name
            ),
        });
    }
    Ok(())
}

/// `emit_allowed_clients`: a comma list of [`IpBlock`]s, duplicates dropped.
fn emit_allowed_clients(
    r: &Reader<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<IpBlock>, ConfigError> {
    let s = r.text("emit_allowed_clients")?;
    let mut out: Vec<IpBlock> = Vec::new();
    for item in s.value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let block: IpBlock = item
            .parse()
            .map_err(|e| ConfigError::at(&s.origin, format!("emit_allowed_clients: {e}")))?;
        if block.prefix() == 0 {
            warnings.push(Warning {
                origin: s.origin.clone(),
                message: format!(
                    "emit_allowed_clients: {block} lets every client use /HttpService/Emit \
                     without a token"
                ),
            });
        }
        if !out.contains(&block) {
            out.push(block);
        }
    }
    Ok(out)
}

/// Longest `clusters_to_serve` value read (4096 ids of up to 19 digits and their commas).
const CLUSTERS_TO_SERVE_MAX_LEN: usize = 4096 * 20;

/// `clusters_to_serve`: empty, or cluster ids separated by commas (no spaces: the value ends
/// at the first one, as the original reads values).
fn clusters_to_serve(r: &Reader<'_>) -> Result<kunlun_core::ClusterScope, ConfigError> {
    let s = r.text("clusters_to_serve")?;
    if s.value.len() > CLUSTERS_TO_SERVE_MAX_LEN {
        return Err(ConfigError::at(
            &s.origin,
            format!(
                "clusters_to_serve: {} characters, at most {CLUSTERS_TO_SERVE_MAX_LEN}",
                s.value.len()
            ),
        ));
    }
    let mut ids = Vec::new();
    for item in s.value.split(',').filter(|_| !s.value.is_empty()) {
        let id: i64 = item.parse().map_err(|_| {
            ConfigError::at(
                &s.origin,
                format!(
                    "clusters_to_serve: {item:?} is not a cluster id; write the ids separated \
                     by commas without spaces, e.g. `clusters_to_serve = 1,2,5`"
                ),
            )
        })?;
        ids.push(id);
    }
    kunlun_core::ClusterScope::only(&ids).map_err(|e| {
        let why = match e {
            kunlun_core::Error::Invalid(m) => m,
            other => other.to_string(),
        };
        ConfigError::at(&s.origin, why)
    })
}

/// `machine_ssh_key`: empty or an absolute path. One outside `ssh_keys_dir` is only warned
/// about: the key file check that refuses it later resolves symlinks, which this cannot.
fn machine_ssh_key(
    r: &Reader<'_>,
    ssh_keys_dir: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<Option<PathBuf>, ConfigError> {
    let s = r.text("machine_ssh_key")?;
    if s.value.is_empty() {
        return Ok(None);
    }
    kunlun_meta::validate::abs_path("machine_ssh_key", &s.value)
        .map_err(|e| ConfigError::at(&s.origin, e.to_string()))?;
    let key = PathBuf::from(&s.value);
    let dir = std::path::absolute(ssh_keys_dir).unwrap_or_else(|_| ssh_keys_dir.to_path_buf());
    if !key.starts_with(&dir) {
        warnings.push(Warning {
            origin: s.origin.clone(),
            message: format!(
                "machine_ssh_key {} is not under ssh_keys_dir {}: the key of machines \
                 registered through /HttpService/Emit will be refused",
                key.display(),
                dir.display()
            ),
        });
    }
    Ok(Some(key))
}

/// Validates everything; see the module doc.
pub fn build(raw: &Raw, config_file: Option<PathBuf>) -> Result<Config, ConfigError> {
    let r = Reader { raw };
    let mut warnings: Vec<Warning> = raw.warnings().to_vec();

    let seeds_setting = r.text("meta_group_seeds")?;
    let meta_group_seeds: Vec<String> = seeds_setting
        .value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    for seed in &meta_group_seeds {
        host_port(&seeds_setting, "meta_group_seeds", seed)?;
    }

    let backend_setting = r.text("meta_backend")?;
    // The original has no meta_backend: its seeds always name a MySQL metadata shard, so its
    // file must not land on an empty SQLite store here.
    let inferred = !raw.is_set("meta_backend") && !meta_group_seeds.is_empty();
    let meta_backend = if inferred {
        warnings.push(Warning {
            origin: seeds_setting.origin.clone(),
            message: "meta_backend not set; meta_group_seeds given: using the MySQL metadata \
                      shard (as the original cluster_mgr does)"
                .into(),
        });
        MetaBackend::Mysql
    } else {
        match backend_setting.value.as_str() {
            "mysql" => MetaBackend::Mysql,
            _ => MetaBackend::Sqlite,
        }
    };
    removed_keys(
        raw,
        !meta_group_seeds.is_empty(),
        raw.is_set("meta_backend") && meta_backend == MetaBackend::Sqlite,
        &mut warnings,
    )?;

    let meta_user = r.text("meta_user")?;
    let meta_pwd = r.text("meta_pwd")?;
    if meta_backend == MetaBackend::Mysql {
        let need = |what: &str| {
            if inferred {
                ConfigError::at(
                    &seeds_setting.origin,
                    format!(
                        "meta_group_seeds without meta_backend means the MySQL metadata shard \
                         (as in the original cluster_mgr), which requires {what}; or set \
                         `meta_backend = sqlite`"
                    ),
                )
            } else {
                ConfigError::at(
                    &backend_setting.origin,
                    format!("meta_backend = mysql requires {what}"),
                )
            }
        };
        if meta_group_seeds.is_empty() {
            return Err(need("meta_group_seeds (host:port,...)"));
        }
        if meta_user.value.is_empty() {
            return Err(need("meta_user"));
        }
        if !raw.is_set("meta_pwd") {
            return Err(need("meta_pwd (write `meta_pwd =` for an empty password)"));
        }
    }
    if !meta_user.value.is_empty() {
        kunlun_meta::validate::name("meta_user", &meta_user.value)
            .map_err(|e| ConfigError::at(&meta_user.origin, e.to_string()))?;
    }

    let meta_ha_user = r.text("meta_ha_user")?;
    let meta_repl_user = r.text("meta_repl_user")?;
    for u in [&meta_ha_user, &meta_repl_user] {
        if !u.value.is_empty() {
            kunlun_meta::validate::name("meta_ha_user/meta_repl_user", &u.value)
                .map_err(|e| ConfigError::at(&u.origin, e.to_string()))?;
        }
    }

    let db = r.text("meta_database")?;
    let db_ok = db.value.len() <= 64
        && db
            .value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !db.value.starts_with(|c: char| c.is_ascii_digit());
    if !db_ok {
        return Err(ConfigError::at(
            &db.origin,
            format!(
                "meta_database: {:?} must be 1-64 of A-Z a-z 0-9 _ not starting with a digit",
                db.value
            ),
        ));
    }

    let meta_tls = tls_settings(&r, "meta_tls")?;
    let catalog_tls = tls_settings(&r, "catalog_tls")?;

    let bind = r.text("http_bind_address")?;
    let http_bind_address: IpAddr = bind.value.parse().map_err(|_| {
        ConfigError::at(
            &bind.origin,
            format!("http_bind_address: {:?} is not an IP address", bind.value),
        )
    })?;

    let auth_setting = r.text("auth")?;
    let auth = match auth_setting.value.as_str() {
        "tokens" => AuthMode::Tokens,
        _ => AuthMode::Auto,
    };
    // Anyone who reaches the port controls every managed machine: off loopback the API is
    // never served without tokens.
    if auth != AuthMode::Tokens && !http_bind_address.is_loopback() {
        return Err(ConfigError::at(
            &bind.origin,
            format!(
                "http_bind_address = {http_bind_address} is not a loopback address: set \
                 `auth = tokens` and create an admin token first (`cluster-mgr token create \
                 --name root --role admin --config FILE`), or bind to 127.0.0.1"
            ),
        ));
    }
    let http_tls = tls_files(&r)?;
    let plain = r.text("http_allow_plaintext")?;
    let http_allow_plaintext = plain.value == "true";
    // Tokens cross the network in every request: off loopback they travel only inside TLS,
    // unless the operator says in writing that the network is trusted.
    if http_tls.is_none() && !http_allow_plaintext && !http_bind_address.is_loopback() {
        return Err(ConfigError::at(
            &bind.origin,
            format!(
                "http_bind_address = {http_bind_address} is not a loopback address: the API \
                 would send tokens in clear; set http_tls_cert and http_tls_key (README \
                 \"Security\"), or `http_allow_plaintext = true` if the network is trusted"
            ),
        ));
    }
    let hosts_setting = r.text("http_allowed_hosts")?;
    let http_allowed_hosts: Vec<String> = hosts_setting
        .value
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    for h in &http_allowed_hosts {
        let bare = match h.rsplit_once(':') {
            Some((b, p)) if !b.is_empty() && p.parse::<u16>().is_ok() && !h.ends_with(']') => b,
            _ => h.as_str(),
        };
        let bare = bare
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(bare);
        host(&hosts_setting, "http_allowed_hosts", bare)?;
    }

    let local_ip = r.text("local_ip")?;
    host(&local_ip, "local_ip", &local_ip.value)?;

    let raft = r.text("raft_group_member_init_config")?;
    for member in raft.value.split(',').filter(|m| !m.is_empty()) {
        let parts: Vec<&str> = member.split(':').collect();
        let ok = parts.len() == 3
            && kunlun_meta::validate::hostaddr("raft", parts[0]).is_ok()
            && parts[1].parse::<u16>().is_ok_and(|p| p > 0)
            && parts[2].parse::<u32>().is_ok();
        if !ok {
            return Err(ConfigError::at(
                &raft.origin,
                format!("raft_group_member_init_config: {member:?} is not ip:port:index"),
            ));
        }
    }

    let log_file = r.text("log_file")?;
    let log_format = match r.text("log_format")?.value.as_str() {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let check_shard_interval = Duration::from_secs_f64(r.float("check_shard_interval")?);
    let tmp_data_path = PathBuf::from(r.text("cluster_mgr_tmp_data_path")?.value);
    let keys = r.text("ssh_keys_dir")?;
    let ssh_keys_dir = if keys.value.is_empty() {
        tmp_data_path.join("keys")
    } else {
        let p = PathBuf::from(&keys.value);
        if !p.is_absolute() {
            return Err(ConfigError::at(
                &keys.origin,
                "ssh_keys_dir must be an absolute path",
            ));
        }
        p
    };
    let ssh_host_key_accept_new = r.text("ssh_host_key_policy")?.value == "accept-new";

    let emit_allowed_clients = emit_allowed_clients(&r, &mut warnings)?;
    let ssh_user = r.text("machine_ssh_user")?;
    kunlun_meta::validate::name("machine_ssh_user", &ssh_user.value)
        .map_err(|e| ConfigError::at(&ssh_user.origin, e.to_string()))?;
    let machine_ssh_key = machine_ssh_key(&r, &ssh_keys_dir, &mut warnings)?;
    let clusters_to_serve = clusters_to_serve(&r)?;

    // File order, then flags and defaults (the sort is stable).
    warnings.sort_by_key(|w| match &w.origin {
        Origin::File { line, .. } => (0, *line),
        _ => (1, 0),
    });

    Ok(Config {
        config_file,
        meta_backend,
        sqlite_path: PathBuf::from(r.text("sqlite_path")?.value),
        meta_group_seeds,
        meta_user: meta_user.value,
        meta_pwd: meta_pwd.value,
        meta_database: db.value,
        meta_ha_user: meta_ha_user.value,
        meta_ha_pwd: r.text("meta_ha_pwd")?.value,
        meta_repl_user: meta_repl_user.value,
        meta_repl_pwd: r.text("meta_repl_pwd")?.value,
        meta_pool_size: r.u32("meta_pool_size")?,
        meta_tls,
        catalog_tls,
        http_bind_address,
        http_port: r.u16("brpc_http_port")?,
        raft_port: r.u16("brpc_raft_port")?,
        raft_group_member_init_config: raft.value,
        local_ip: local_ip.value,
        tmp_data_path,
        log_file: Some(log_file.value)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        max_log_file_size_mb: r.u32("max_log_file_size")?,
        log_format,
        mysql_connect_timeout: r.secs("mysql_connect_timeout")?,
        mysql_read_timeout: r.secs("mysql_read_timeout")?,
        mysql_write_timeout: r.secs("mysql_write_timeout")?,
        mysql_max_packet_size: r.int("mysql_max_packet_size")?.unsigned_abs(),
        num_worker_threads: r.u32("num_worker_threads")?,
        check_shard_interval,
        thread_work_interval: r.secs("thread_work_interval")?,
        storage_sync_interval: r.secs("storage_sync_interval")?,
        binlog_archive_interval: r.secs("binlog_archive_interval")?,
        backup_schedule_interval: r.secs("backup_schedule_interval")?,
        commit_log_retention: Duration::from_secs(
            r.int("commit_log_retention_hours")?.unsigned_abs() * 3600,
        ),
        statement_retries: r.u32("statement_retries")?,
        statement_retry_interval: Duration::from_millis(
            r.int("statement_retry_interval_ms")?.unsigned_abs(),
        ),
        global_txn_commit_log_wait_max: r.secs("global_txn_commit_log_wait_max_sec")?,
        backup_allow_replica_delay: r.secs("backup_allow_replica_delay")?,
        prometheus_path: PathBuf::from(r.text("prometheus_path")?.value),
        prometheus_port_start: r.u16("prometheus_port_start")?,
        machine_check_interval: Duration::from_secs_f64(r.float("machine_check_interval")?),
        keeper_interval: Duration::from_secs_f64(r.float("instance_keeper_interval_secs")?),
        keeper_max_restarts: r.u32("keeper_max_restarts")?,
        keeper_restart_window: r.secs("keeper_restart_window_secs")?,
        leader_lease: Duration::from_secs_f64(r.float("leader_lease_secs")?),
        auth,
        http_allowed_hosts,
        http_tls,
        http_allow_plaintext,
        http_client_timeout: r.secs("http_client_timeout_secs")?,
        http_max_connections: r.int("http_max_connections")?.unsigned_abs() as usize,
        clusters_to_serve,
        job_retention: Some(r.int("job_retention_days")?.unsigned_abs())
            .filter(|d| *d > 0)
            .map(|d| Duration::from_secs(d * 86_400)),
        ssh_keys_dir,
        ssh_host_key_accept_new,
        emit_allowed_clients,
        machine_ssh_user: ssh_user.value,
        machine_ssh_port: r.u16("machine_ssh_port")?,
        machine_ssh_key,
        warnings: warnings.iter().map(Warning::to_string).collect(),
    })
}
