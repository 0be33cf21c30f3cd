-- Closer to the original KunlunBase metadata schema (kl:scripts/meta_inuse.sql), so that a real
-- kunlun-server compute node and the original's tools work against this database:
--   1. the stored procedure append_ddl_log_entry, which every DDL of a compute node CALLs;
--   2. cluster_general_job_log.job_type gets DEFAULT '' (the original cluster_mgr and node_mgr
--      insert job rows without it; it stays NOT NULL so our rows always read as a string);
--   3. the original's tables we lacked, created empty; no code of ours reads or writes them
--      (src/store/introspect.rs COMPAT_ONLY_TABLES, no table! in schema.rs).
-- Tables marked "exact" copy meta_inuse.sql's columns; those marked "reconstructed" are not in
-- the published script: their columns are the ones the original's cluster_mgr, XPanel and
-- scripts read and write. utf8mb4 throughout, so the original's varchar(8192) columns are text
-- (two utf8mb4 varchar(8192) exceed MySQL's 65535-byte row limit). Foreign keys to our own
-- tables cascade or set NULL, so a row written by an original tool never blocks our deletes.
--
-- This file runs as one multi-statement COM_QUERY (diesel_migrations -> diesel-async's
-- batch_execute -> mysql_async query_drop): the server's parser, not a client, splits it, so the
-- procedure's BEGIN ... END body needs no DELIMITER. Creating it needs the CREATE ROUTINE
-- privilege on this database.

-- 1. append_ddl_log_entry
--
-- Signature and behaviour of the original (kl:scripts/meta_inuse.sql; caller
-- kl:src/modules/remote_rel/log_utils.c log_ddl_prepare): appends one row to the per-cluster
-- DDL log `tblname` (`ddl_ops_log_<cluster>`, in this database: a routine runs with its own
-- database as the default one) and returns its id in my_opid. The caller must hold the named
-- lock 'DDL' (SELECT GET_LOCK('DDL', n)), which serialises DDL across compute nodes; otherwise
-- SQLSTATE 45000. cur_opid (the caller's applied position) is accepted and unused, as in the
-- original. Ours differs only in quoting: tblname is one identifier in backticks, so a cluster
-- name with '-' or '.' works and nothing else can be spliced into the statement.
-- The body runs under the sql_mode it was created with: strict, whatever the caller's session
-- says, so a bad enum value is an error and never a silently stored ''.
SET @kl_saved_sql_mode = @@SESSION.sql_mode;
SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION';
DROP PROCEDURE IF EXISTS append_ddl_log_entry;
CREATE PROCEDURE append_ddl_log_entry(
  tblname varchar(256),
  dbname varchar(64),
  schema_name varchar(64),
  role_name varchar(64),
  user_name varchar(64),
  search_path text,
  objname varchar(64),
  obj_type varchar(16),
  op_type varchar(16),
  cur_opid bigint unsigned,
  sql_src text,
  sql_src_sn text,
  target_shardid int unsigned,
  initiator_id int unsigned,
  txn_id bigint unsigned,
  OUT my_opid bigint unsigned
)
  MODIFIES SQL DATA
  SQL SECURITY INVOKER
  COMMENT 'Appends one DDL to ddl_ops_log_<cluster>; the caller holds GET_LOCK(''DDL'')'
BEGIN
  DECLARE holder bigint unsigned DEFAULT IS_USED_LOCK('DDL');
  IF holder IS NULL OR holder <> CONNECTION_ID() THEN
    SIGNAL SQLSTATE '45000'
      SET MESSAGE_TEXT = 'append_ddl_log_entry: this session does not hold the DDL lock (SELECT GET_LOCK(''DDL'', n) first)';
  END IF;
  IF tblname IS NULL OR tblname = '' THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'append_ddl_log_entry: no table name';
  END IF;

  -- EXECUTE ... USING takes user variables only (MySQL 8); prefixed so a caller's own
  -- variables are left alone, and cleared afterwards so no DDL text lingers in the session.
  SET @kl_ddl_log_sql = CONCAT(
    'INSERT INTO `', REPLACE(tblname, '`', '``'), '` (db_name, schema_name, role_name, ',
    'user_name, search_path, objname, objtype, optype, sql_src, sql_storage_node, ',
    'target_shard_id, initiator, txn_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
  SET @kl_ddl_log_db = dbname, @kl_ddl_log_schema = schema_name, @kl_ddl_log_role = role_name,
      @kl_ddl_log_user = user_name, @kl_ddl_log_path = search_path, @kl_ddl_log_obj = objname,
      @kl_ddl_log_objtype = obj_type, @kl_ddl_log_optype = op_type, @kl_ddl_log_src = sql_src,
      @kl_ddl_log_src_sn = sql_src_sn, @kl_ddl_log_shard = target_shardid,
      @kl_ddl_log_initiator = initiator_id, @kl_ddl_log_txn = txn_id;
  PREPARE kl_ddl_log_insert FROM @kl_ddl_log_sql;
  EXECUTE kl_ddl_log_insert USING @kl_ddl_log_db, @kl_ddl_log_schema, @kl_ddl_log_role,
    @kl_ddl_log_user, @kl_ddl_log_path, @kl_ddl_log_obj, @kl_ddl_log_objtype,
    @kl_ddl_log_optype, @kl_ddl_log_src, @kl_ddl_log_src_sn, @kl_ddl_log_shard,
    @kl_ddl_log_initiator, @kl_ddl_log_txn;
  SET my_opid = LAST_INSERT_ID();
  DEALLOCATE PREPARE kl_ddl_log_insert;
  SET @kl_ddl_log_sql = NULL, @kl_ddl_log_db = NULL, @kl_ddl_log_schema = NULL,
      @kl_ddl_log_role = NULL, @kl_ddl_log_user = NULL, @kl_ddl_log_path = NULL,
      @kl_ddl_log_obj = NULL, @kl_ddl_log_objtype = NULL, @kl_ddl_log_optype = NULL,
      @kl_ddl_log_src = NULL, @kl_ddl_log_src_sn = NULL, @kl_ddl_log_shard = NULL,
      @kl_ddl_log_initiator = NULL, @kl_ddl_log_txn = NULL;
END;
SET SESSION sql_mode = @kl_saved_sql_mode;

-- 2. Job rows without a job_type (the original's `insert ... set user_name='internal_user'`).
ALTER TABLE cluster_general_job_log ALTER COLUMN job_type SET DEFAULT '';

-- 3. The original's tables.

-- exact; server_nodes.dc_id is not made a foreign key to it (rows of ours may carry any dc_id).
CREATE TABLE data_centers (
  id int unsigned NOT NULL AUTO_INCREMENT,
  name varchar(128) NOT NULL,
  dc_type varchar(32) DEFAULT NULL,
  owner varchar(64) DEFAULT NULL,
  province varchar(128) DEFAULT NULL,
  city varchar(128) DEFAULT NULL,
  district varchar(128) DEFAULT NULL,
  location text DEFAULT NULL,
  memo text DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- exact (sizes in MB); the original's delete_machine deletes a machine's row here first.
CREATE TABLE server_nodes_stats (
  id int unsigned NOT NULL,
  comp_datadir_used int NOT NULL DEFAULT 0,
  comp_datadir_avail int NOT NULL,
  datadir_used int NOT NULL DEFAULT 0,
  datadir_avail int NOT NULL,
  wal_log_dir_used int NOT NULL DEFAULT 0,
  wal_log_dir_avail int NOT NULL,
  log_dir_used int NOT NULL DEFAULT 0,
  log_dir_avail int NOT NULL,
  avg_network_usage_pct int NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  CONSTRAINT server_nodes_stats_node FOREIGN KEY (id) REFERENCES server_nodes (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- exact
CREATE TABLE server_nodes_conn_stats (
  id1 int unsigned NOT NULL,
  id2 int unsigned NOT NULL,
  rtt_us int unsigned NOT NULL,
  time_diff_us bigint unsigned NOT NULL,
  PRIMARY KEY (id1, id2)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- exact (conn_str, hostaddr: varchar(8192) in the original)
CREATE TABLE backup_storage (
  id int unsigned NOT NULL AUTO_INCREMENT,
  name varchar(256) DEFAULT NULL,
  stype enum('HDFS','S3','EBS','CEPH','OTHER') DEFAULT NULL,
  conn_str text DEFAULT NULL,
  hostaddr text DEFAULT NULL,
  port int DEFAULT NULL,
  user_name varchar(128) DEFAULT NULL,
  passwd varchar(32) DEFAULT NULL,
  extra text DEFAULT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- reconstructed: one row per physical backup of a shard (backup_type 'storage', shard_id) or of
-- a compute node ('compute', comp_id), inserted with only those columns and then moved
-- not_started -> ongoing -> done|failed with the node_mgr answer in memo (cluster_mgr
-- KColdBackUpMission); XPanel lists cluster_id, shard_id, comp_id, start_ts, end_ts,
-- backup_type, status, memo.
CREATE TABLE cluster_coldbackups (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  storage_id int unsigned NOT NULL,
  cluster_id int unsigned NOT NULL,
  shard_id int unsigned DEFAULT NULL,
  comp_id int unsigned DEFAULT NULL,
  backup_type enum('storage','compute') NOT NULL,
  status enum('not_started','ongoing','done','failed') NOT NULL DEFAULT 'not_started',
  start_ts timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  end_ts timestamp(6) NULL DEFAULT NULL,
  memo longtext DEFAULT NULL,
  backup_addr varchar(1024) DEFAULT NULL,
  PRIMARY KEY (id),
  KEY cluster_id (cluster_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- exact (shard_backup_path: latin1 varchar(8192) in the original)
CREATE TABLE cluster_shard_backup_restore_log (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  storage_id int unsigned NOT NULL,
  cluster_id int unsigned NOT NULL,
  shard_id int unsigned NOT NULL,
  shard_node_id int unsigned NOT NULL,
  optype enum('backup','restore') NOT NULL,
  shard_backup_path text DEFAULT NULL,
  status enum('not_started','ongoing','done','failed') NOT NULL DEFAULT 'not_started',
  memo text DEFAULT NULL,
  when_started timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  when_ended timestamp(6) NULL DEFAULT NULL,
  PRIMARY KEY (id),
  CONSTRAINT csbrl_storage FOREIGN KEY (storage_id) REFERENCES backup_storage (id),
  CONSTRAINT csbrl_cluster FOREIGN KEY (cluster_id) REFERENCES db_clusters (id) ON DELETE CASCADE,
  CONSTRAINT csbrl_shard FOREIGN KEY (shard_id) REFERENCES shards (id) ON DELETE CASCADE,
  CONSTRAINT csbrl_node FOREIGN KEY (shard_node_id) REFERENCES shard_nodes (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- reconstructed: one row per restore task of a cluster_restore job (general_log_id =
-- cluster_general_job_log.id, restore_type 'shard' or 'compute'), same shape as
-- mysql_pg_install_log.
CREATE TABLE restore_log (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  general_log_id bigint unsigned NOT NULL,
  restore_type varchar(128) NOT NULL,
  status enum('not_started','ongoing','done','failed') NOT NULL DEFAULT 'not_started',
  when_started timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  when_ended timestamp(6) NULL DEFAULT NULL,
  job_info longtext DEFAULT NULL,
  memo longtext DEFAULT NULL,
  PRIMARY KEY (id),
  KEY general_log_id (general_log_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- reconstructed: one row per node_mgr install/uninstall batch of a job (install_type 'mysql',
-- 'uninstall_mysql', 'postgres', 'uninstall_postgres').
CREATE TABLE mysql_pg_install_log (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  general_log_id bigint unsigned NOT NULL,
  install_type varchar(128) NOT NULL,
  status enum('not_started','ongoing','done','failed') NOT NULL DEFAULT 'not_started',
  when_started timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  when_ended timestamp(6) NULL DEFAULT NULL,
  job_info longtext DEFAULT NULL,
  memo longtext DEFAULT NULL,
  PRIMARY KEY (id),
  KEY general_log_id (general_log_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- reconstructed: the fail-over audit log of the original's enterprise HA (one row per step of a
-- fail-over task; tests look for step = 'Fail', XPanel groups by taskid). Ours is kl_failover.
CREATE TABLE rbr_consfailover (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  host varchar(512) DEFAULT NULL,
  cluster_id int unsigned DEFAULT NULL,
  shard_id int unsigned DEFAULT NULL,
  taskid varchar(128) DEFAULT NULL,
  step varchar(64) DEFAULT NULL,
  new_master_host varchar(512) DEFAULT NULL,
  description text DEFAULT NULL,
  consfailover_msg longtext DEFAULT NULL,
  `timestamp` timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  err_code int DEFAULT NULL,
  err_msg text DEFAULT NULL,
  PRIMARY KEY (id),
  KEY cluster_shard (cluster_id, shard_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- reconstructed: a snapshot row whenever a cluster's shards change (point-in-time restore):
-- shard_id is the comma list of the cluster's shard ids, the two log ids the high-water marks
-- of commit_log_<cluster> and ddl_ops_log_<cluster> then.
CREATE TABLE cluster_shard_topology (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  cluster_id int unsigned NOT NULL,
  shard_id text NOT NULL,
  max_commit_log_id bigint unsigned NOT NULL DEFAULT 0,
  max_ddl_log_id bigint unsigned NOT NULL DEFAULT 0,
  when_created timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  PRIMARY KEY (id),
  KEY cluster_id (cluster_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- exact: the expand_cluster (table move) state machine; cluster_general_job_log.related_id of
-- an expand job is its id.
CREATE TABLE table_move_jobs (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  table_list text DEFAULT NULL,
  src_shard int unsigned DEFAULT NULL,
  src_shard_node int unsigned DEFAULT NULL,
  dest_shard int unsigned DEFAULT NULL,
  dest_shard_node int unsigned DEFAULT NULL,
  snapshot_binlog_file_idx varchar(256) DEFAULT NULL,
  snapshot_binlog_file_offset bigint unsigned DEFAULT NULL,
  tab_file_format enum('logical','physical','dyn_clone') NOT NULL,
  when_started timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  when_ended timestamp(6) NULL DEFAULT NULL,
  status enum('not_started','dumped','transmitted','loaded','caught_up','renamed','rerouted','done','failed') NOT NULL DEFAULT 'not_started',
  memo text DEFAULT NULL,
  PRIMARY KEY (id),
  CONSTRAINT tmj_src_shard FOREIGN KEY (src_shard) REFERENCES shards (id) ON DELETE SET NULL,
  CONSTRAINT tmj_src_node FOREIGN KEY (src_shard_node) REFERENCES shard_nodes (id) ON DELETE SET NULL,
  CONSTRAINT tmj_dest_shard FOREIGN KEY (dest_shard) REFERENCES shards (id) ON DELETE SET NULL,
  CONSTRAINT tmj_dest_node FOREIGN KEY (dest_shard_node) REFERENCES shard_nodes (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- exact: what an install job rolls back after an error.
CREATE TABLE cluster_roll_back_record (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  job_id varchar(128) NOT NULL,
  roll_info varchar(512) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
