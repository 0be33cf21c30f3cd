-- The same tables and columns as the MySQL migration (KunlunBase metadata names plus kl_*),
-- in SQLite types: Kunlun's enum columns are TEXT with CHECK constraints; integer columns are
-- declared BIGINT and timestamps TIMESTAMP (UTC text) so that `diesel print-schema` yields the
-- same diesel types for both backends.

CREATE TABLE server_nodes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hostaddr TEXT NOT NULL,
  dc_id BIGINT DEFAULT NULL,
  rack_id TEXT DEFAULT NULL,
  comp_datadir TEXT DEFAULT NULL,
  datadir TEXT DEFAULT NULL,
  logdir TEXT DEFAULT NULL,
  wal_log_dir TEXT DEFAULT NULL,
  total_mem BIGINT DEFAULT NULL,
  total_cpu_cores BIGINT DEFAULT NULL,
  svc_since TIMESTAMP DEFAULT NULL,
  nodemgr_port BIGINT DEFAULT NULL,
  nodemgr_tcp_port BIGINT DEFAULT NULL,
  nodemgr_prometheus_port BIGINT DEFAULT NULL,
  nodemgr_bin_path TEXT DEFAULT NULL,
  nodemgr_tmp_data_abs_path TEXT DEFAULT NULL,
  extra_props TEXT DEFAULT NULL,
  node_stats TEXT NOT NULL DEFAULT 'running' CHECK (node_stats IN ('running','idle','dead')),
  current_port_pos BIGINT NOT NULL DEFAULT 0,
  machine_type TEXT DEFAULT NULL CHECK (machine_type IN ('storage','computer')),
  port_range TEXT DEFAULT NULL,
  used_port TEXT DEFAULT NULL,
  installing_port TEXT DEFAULT NULL,
  UNIQUE (hostaddr, machine_type)
);

CREATE TABLE db_clusters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  nick_name TEXT DEFAULT NULL,
  owner TEXT DEFAULT NULL,
  ddl_log_tblname TEXT DEFAULT NULL,
  when_created TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  business TEXT DEFAULT NULL,
  memo TEXT DEFAULT NULL,
  status TEXT NOT NULL DEFAULT 'inuse' CHECK (status IN ('inuse','deleted')),
  ha_mode TEXT NOT NULL DEFAULT 'rbr' CHECK (ha_mode IN ('no_rep','mgr','rbr'))
);

CREATE TABLE shards (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  when_created TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  num_nodes BIGINT NOT NULL DEFAULT 0,
  space_volumn BIGINT NOT NULL DEFAULT 0,
  num_tablets BIGINT NOT NULL DEFAULT 0,
  db_cluster_id BIGINT NOT NULL REFERENCES db_clusters (id) ON DELETE CASCADE,
  sync_num BIGINT NOT NULL DEFAULT 1,
  extra_props TEXT DEFAULT NULL,
  degrade_conf_state TEXT NOT NULL DEFAULT 'OFF' CHECK (degrade_conf_state IN ('ON','OFF')),
  degrade_run_state TEXT NOT NULL DEFAULT 'OFF' CHECK (degrade_run_state IN ('ON','OFF')),
  degrade_conf_time BIGINT NOT NULL DEFAULT 10,
  status TEXT NOT NULL DEFAULT 'inuse' CHECK (status IN ('inuse','deleted')),
  coldbackup_period TEXT DEFAULT '01:00:00-02:00:00',
  UNIQUE (db_cluster_id, name)
);

CREATE TABLE shard_nodes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ro_weight BIGINT NOT NULL DEFAULT 0,
  hostaddr TEXT NOT NULL,
  port BIGINT NOT NULL,
  user_name TEXT NOT NULL,
  passwd TEXT NOT NULL,
  shard_id BIGINT NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
  db_cluster_id BIGINT NOT NULL REFERENCES db_clusters (id) ON DELETE CASCADE,
  svr_node_id BIGINT DEFAULT NULL,
  when_created TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  master_priority BIGINT NOT NULL DEFAULT 1,
  status TEXT NOT NULL DEFAULT 'creating'
    CHECK (status IN ('creating','inactive','active','deleted','manual_stop')),
  cpu_cores BIGINT NOT NULL DEFAULT 0,
  initial_storage_GB BIGINT NOT NULL DEFAULT 0,
  max_storage_GB BIGINT NOT NULL DEFAULT 0,
  innodb_buffer_pool_MB BIGINT NOT NULL DEFAULT 0,
  rocksdb_buffer_pool_MB BIGINT NOT NULL DEFAULT 0,
  extra_props TEXT DEFAULT NULL,
  sync_state TEXT NOT NULL DEFAULT 'fsync' CHECK (sync_state IN ('fsync','async')),
  member_state TEXT NOT NULL DEFAULT 'replica' CHECK (member_state IN ('source','replica')),
  replica_delay BIGINT NOT NULL DEFAULT 0,
  backup_node TEXT NOT NULL DEFAULT 'OFF' CHECK (backup_node IN ('OFF','ON')),
  UNIQUE (hostaddr, port)
);

CREATE TABLE comp_nodes_id_seq (
  id INTEGER PRIMARY KEY AUTOINCREMENT
);

CREATE TABLE comp_nodes (
  id BIGINT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  hostaddr TEXT NOT NULL,
  port BIGINT NOT NULL,
  db_cluster_id BIGINT NOT NULL REFERENCES db_clusters (id) ON DELETE CASCADE,
  when_created TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  user_name TEXT NOT NULL DEFAULT 'abc',
  passwd TEXT NOT NULL DEFAULT 'abc',
  status TEXT NOT NULL DEFAULT 'creating'
    CHECK (status IN ('creating','inactive','active','deleted','manual_stop')),
  svr_node_id BIGINT DEFAULT NULL,
  cpu_cores BIGINT NOT NULL DEFAULT 0,
  max_mem_MB BIGINT NOT NULL DEFAULT 0,
  max_conns BIGINT NOT NULL DEFAULT 0,
  extra_props TEXT DEFAULT NULL,
  coldbackup_period TEXT DEFAULT '01:00:00-02:00:00',
  PRIMARY KEY (db_cluster_id, id),
  UNIQUE (db_cluster_id, name)
);

CREATE TABLE meta_db_nodes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hostaddr TEXT NOT NULL,
  port BIGINT NOT NULL,
  user_name TEXT NOT NULL,
  passwd TEXT NOT NULL,
  master_priority BIGINT NOT NULL DEFAULT 1,
  member_state TEXT NOT NULL DEFAULT 'replica' CHECK (member_state IN ('source','replica')),
  sync_state TEXT NOT NULL DEFAULT 'fsync' CHECK (sync_state IN ('fsync','async')),
  degrade_conf_state TEXT NOT NULL DEFAULT 'OFF' CHECK (degrade_conf_state IN ('ON','OFF')),
  degrade_run_state TEXT NOT NULL DEFAULT 'OFF' CHECK (degrade_run_state IN ('ON','OFF')),
  replica_delay BIGINT NOT NULL DEFAULT 0,
  degrade_conf_time BIGINT NOT NULL DEFAULT 10,
  sync_num BIGINT NOT NULL DEFAULT 1,
  nodemgr_bin_path TEXT DEFAULT NULL,
  UNIQUE (hostaddr, port)
);

CREATE TABLE global_configuration (
  name TEXT NOT NULL PRIMARY KEY,
  value TEXT NOT NULL
);

CREATE TABLE cluster_general_job_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT DEFAULT NULL,
  related_id TEXT NOT NULL DEFAULT '0',
  job_type TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'not_started'
    CHECK (status IN ('not_started','ongoing','done','failed')),
  memo TEXT DEFAULT NULL,
  when_started TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  when_ended TIMESTAMP DEFAULT NULL,
  job_info TEXT DEFAULT NULL,
  user_name TEXT DEFAULT NULL
);
CREATE INDEX cluster_general_job_log_status_type ON cluster_general_job_log (status, job_type);

CREATE TABLE node_map_master (
  cluster_id BIGINT NOT NULL,
  node_host TEXT NOT NULL,
  master_host TEXT NOT NULL,
  master_uuid TEXT DEFAULT NULL,
  PRIMARY KEY (cluster_id, node_host)
);

CREATE TABLE cluster_mgr_nodes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hostaddr TEXT NOT NULL,
  port BIGINT NOT NULL,
  prometheus_port BIGINT DEFAULT NULL,
  member_state TEXT NOT NULL DEFAULT 'replica' CHECK (member_state IN ('source','replica')),
  UNIQUE (hostaddr, port)
);

CREATE TABLE commit_log_template_table (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  comp_node_id BIGINT NOT NULL,
  txn_id BIGINT NOT NULL,
  next_txn_cmd TEXT NOT NULL CHECK (next_txn_cmd IN ('commit','abort')),
  prepare_ts TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  written_shards TEXT DEFAULT NULL,
  UNIQUE (comp_node_id, txn_id)
);

CREATE TABLE ddl_ops_log_template_table (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  objname TEXT NOT NULL,
  db_name TEXT NOT NULL,
  schema_name TEXT NOT NULL,
  user_name TEXT NOT NULL,
  role_name TEXT NOT NULL,
  search_path TEXT NOT NULL,
  optype TEXT NOT NULL
    CHECK (optype IN ('create','drop','rename','alter','replace','remap_shardid','others')),
  objtype TEXT NOT NULL CHECK (objtype IN ('db','index','matview','partition','schema','seq',
    'table','func','role_or_group','proc','stats','user','view','others')),
  when_logged TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  sql_src TEXT NOT NULL,
  sql_storage_node TEXT NOT NULL,
  target_shard_id BIGINT NOT NULL,
  initiator BIGINT NOT NULL,
  txn_id BIGINT NOT NULL
);

CREATE TABLE kl_machine_ssh (
  server_node_id BIGINT NOT NULL PRIMARY KEY REFERENCES server_nodes (id) ON DELETE CASCADE,
  ssh_port BIGINT NOT NULL DEFAULT 22,
  ssh_user TEXT NOT NULL,
  ssh_key_path TEXT NOT NULL
);

CREATE TABLE kl_leader_lease (
  name TEXT NOT NULL PRIMARY KEY,
  holder TEXT NOT NULL,
  epoch BIGINT NOT NULL DEFAULT 0,
  expires_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
