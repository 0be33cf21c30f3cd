-- The SQLite twin of the MySQL migration (see its comments): SQLite has no stored procedures,
-- so append_ddl_log_entry exists only on MySQL (compute nodes need a MySQL metadata store
-- anyway). Same tables and columns in SQLite types: enums are TEXT with CHECK, integers BIGINT,
-- timestamps TIMESTAMP (UTC text).

-- 2. cluster_general_job_log.job_type gets DEFAULT ''. SQLite cannot change a column's default
-- in place: the table is rebuilt (create the new shape, copy every row, drop, rename, recreate
-- the index). Nothing references it by a foreign key. Its AUTOINCREMENT high-water mark is
-- carried over, so the id of a deleted job is never handed out again.
CREATE TABLE kl_cluster_general_job_log_new (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT DEFAULT NULL,
  related_id TEXT NOT NULL DEFAULT '0',
  job_type TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'not_started'
    CHECK (status IN ('not_started','ongoing','done','failed')),
  memo TEXT DEFAULT NULL,
  when_started TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  when_ended TIMESTAMP DEFAULT NULL,
  job_info TEXT DEFAULT NULL,
  user_name TEXT DEFAULT NULL
);
INSERT INTO kl_cluster_general_job_log_new
  (id, job_id, related_id, job_type, status, memo, when_started, when_ended, job_info, user_name)
  SELECT id, job_id, related_id, job_type, status, memo, when_started, when_ended, job_info,
    user_name
  FROM cluster_general_job_log;
DELETE FROM sqlite_sequence WHERE name = 'kl_cluster_general_job_log_new';
INSERT INTO sqlite_sequence (name, seq)
  SELECT 'kl_cluster_general_job_log_new', seq FROM sqlite_sequence
  WHERE name = 'cluster_general_job_log';
DROP TABLE cluster_general_job_log;
ALTER TABLE kl_cluster_general_job_log_new RENAME TO cluster_general_job_log;
CREATE INDEX cluster_general_job_log_status_type ON cluster_general_job_log (status, job_type);

-- 3. The original's tables, created empty.

CREATE TABLE data_centers (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  dc_type TEXT DEFAULT NULL,
  owner TEXT DEFAULT NULL,
  province TEXT DEFAULT NULL,
  city TEXT DEFAULT NULL,
  district TEXT DEFAULT NULL,
  location TEXT DEFAULT NULL,
  memo TEXT DEFAULT NULL
);

CREATE TABLE server_nodes_stats (
  id BIGINT NOT NULL PRIMARY KEY REFERENCES server_nodes (id) ON DELETE CASCADE,
  comp_datadir_used BIGINT NOT NULL DEFAULT 0,
  comp_datadir_avail BIGINT NOT NULL,
  datadir_used BIGINT NOT NULL DEFAULT 0,
  datadir_avail BIGINT NOT NULL,
  wal_log_dir_used BIGINT NOT NULL DEFAULT 0,
  wal_log_dir_avail BIGINT NOT NULL,
  log_dir_used BIGINT NOT NULL DEFAULT 0,
  log_dir_avail BIGINT NOT NULL,
  avg_network_usage_pct BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE server_nodes_conn_stats (
  id1 BIGINT NOT NULL,
  id2 BIGINT NOT NULL,
  rtt_us BIGINT NOT NULL,
  time_diff_us BIGINT NOT NULL,
  PRIMARY KEY (id1, id2)
);

CREATE TABLE backup_storage (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT DEFAULT NULL,
  stype TEXT DEFAULT NULL CHECK (stype IN ('HDFS','S3','EBS','CEPH','OTHER')),
  conn_str TEXT DEFAULT NULL,
  hostaddr TEXT DEFAULT NULL,
  port BIGINT DEFAULT NULL,
  user_name TEXT DEFAULT NULL,
  passwd TEXT DEFAULT NULL,
  extra TEXT DEFAULT NULL
);

CREATE TABLE cluster_coldbackups (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  storage_id BIGINT NOT NULL,
  cluster_id BIGINT NOT NULL,
  shard_id BIGINT DEFAULT NULL,
  comp_id BIGINT DEFAULT NULL,
  backup_type TEXT NOT NULL CHECK (backup_type IN ('storage','compute')),
  status TEXT NOT NULL DEFAULT 'not_started'
    CHECK (status IN ('not_started','ongoing','done','failed')),
  start_ts TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  end_ts TIMESTAMP DEFAULT NULL,
  memo TEXT DEFAULT NULL,
  backup_addr TEXT DEFAULT NULL
);
CREATE INDEX cluster_coldbackups_cluster ON cluster_coldbackups (cluster_id);

CREATE TABLE cluster_shard_backup_restore_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  storage_id BIGINT NOT NULL REFERENCES backup_storage (id),
  cluster_id BIGINT NOT NULL REFERENCES db_clusters (id) ON DELETE CASCADE,
  shard_id BIGINT NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
  shard_node_id BIGINT NOT NULL REFERENCES shard_nodes (id) ON DELETE CASCADE,
  optype TEXT NOT NULL CHECK (optype IN ('backup','restore')),
  shard_backup_path TEXT DEFAULT NULL,
  status TEXT NOT NULL DEFAULT 'not_started'
    CHECK (status IN ('not_started','ongoing','done','failed')),
  memo TEXT DEFAULT NULL,
  when_started TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  when_ended TIMESTAMP DEFAULT NULL
);

CREATE TABLE restore_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  general_log_id BIGINT NOT NULL,
  restore_type TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'not_started'
    CHECK (status IN ('not_started','ongoing','done','failed')),
  when_started TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  when_ended TIMESTAMP DEFAULT NULL,
  job_info TEXT DEFAULT NULL,
  memo TEXT DEFAULT NULL
);
CREATE INDEX restore_log_general_log_id ON restore_log (general_log_id);

CREATE TABLE mysql_pg_install_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  general_log_id BIGINT NOT NULL,
  install_type TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'not_started'
    CHECK (status IN ('not_started','ongoing','done','failed')),
  when_started TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  when_ended TIMESTAMP DEFAULT NULL,
  job_info TEXT DEFAULT NULL,
  memo TEXT DEFAULT NULL
);
CREATE INDEX mysql_pg_install_log_general_log_id ON mysql_pg_install_log (general_log_id);

CREATE TABLE rbr_consfailover (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  host TEXT DEFAULT NULL,
  cluster_id BIGINT DEFAULT NULL,
  shard_id BIGINT DEFAULT NULL,
  taskid TEXT DEFAULT NULL,
  step TEXT DEFAULT NULL,
  new_master_host TEXT DEFAULT NULL,
  description TEXT DEFAULT NULL,
  consfailover_msg TEXT DEFAULT NULL,
  `timestamp` TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  err_code BIGINT DEFAULT NULL,
  err_msg TEXT DEFAULT NULL
);
CREATE INDEX rbr_consfailover_cluster_shard ON rbr_consfailover (cluster_id, shard_id);

CREATE TABLE cluster_shard_topology (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  cluster_id BIGINT NOT NULL,
  shard_id TEXT NOT NULL,
  max_commit_log_id BIGINT NOT NULL DEFAULT 0,
  max_ddl_log_id BIGINT NOT NULL DEFAULT 0,
  when_created TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX cluster_shard_topology_cluster ON cluster_shard_topology (cluster_id);

CREATE TABLE table_move_jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  table_list TEXT DEFAULT NULL,
  src_shard BIGINT DEFAULT NULL REFERENCES shards (id) ON DELETE SET NULL,
  src_shard_node BIGINT DEFAULT NULL REFERENCES shard_nodes (id) ON DELETE SET NULL,
  dest_shard BIGINT DEFAULT NULL REFERENCES shards (id) ON DELETE SET NULL,
  dest_shard_node BIGINT DEFAULT NULL REFERENCES shard_nodes (id) ON DELETE SET NULL,
  snapshot_binlog_file_idx TEXT DEFAULT NULL,
  snapshot_binlog_file_offset BIGINT DEFAULT NULL,
  tab_file_format TEXT NOT NULL CHECK (tab_file_format IN ('logical','physical','dyn_clone')),
  when_started TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  when_ended TIMESTAMP DEFAULT NULL,
  status TEXT NOT NULL DEFAULT 'not_started' CHECK (status IN ('not_started','dumped',
    'transmitted','loaded','caught_up','renamed','rerouted','done','failed')),
  memo TEXT DEFAULT NULL
);

CREATE TABLE cluster_roll_back_record (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  roll_info TEXT NOT NULL
);
