-- KunlunBase metadata schema (kunlun_metadata_db, see reference §1) for the tables the manager
-- uses, plus our own tables prefixed kl_. Column names follow Kunlun's meta_inuse.sql so
-- KunlunBase compute nodes and tools can share this database.
-- Deviations: server_nodes is unique on (hostaddr, machine_type), which is how cluster_mgr
-- really uses it; commit_log_template_table is not partitioned (retention deletes rows).

CREATE TABLE server_nodes (
  id int unsigned NOT NULL AUTO_INCREMENT,
  hostaddr varchar(512) NOT NULL,
  dc_id int unsigned DEFAULT NULL,
  rack_id varchar(256) DEFAULT NULL,
  comp_datadir text DEFAULT NULL,
  datadir text DEFAULT NULL,
  logdir text DEFAULT NULL,
  wal_log_dir text DEFAULT NULL,
  total_mem int unsigned DEFAULT NULL,
  total_cpu_cores int unsigned DEFAULT NULL,
  svc_since timestamp(6) NULL DEFAULT NULL,
  nodemgr_port int DEFAULT NULL,
  nodemgr_tcp_port int DEFAULT NULL,
  nodemgr_prometheus_port int DEFAULT NULL,
  nodemgr_bin_path varchar(1024) DEFAULT NULL,
  nodemgr_tmp_data_abs_path varchar(1024) DEFAULT NULL,
  extra_props text DEFAULT NULL,
  node_stats enum('running','idle','dead') NOT NULL DEFAULT 'running',
  current_port_pos int unsigned NOT NULL DEFAULT 0,
  machine_type enum('storage','computer') DEFAULT NULL,
  port_range varchar(64) DEFAULT NULL,
  used_port text DEFAULT NULL,
  installing_port text DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY hostaddr_machine_type (hostaddr, machine_type)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE db_clusters (
  id int unsigned NOT NULL AUTO_INCREMENT,
  name varchar(120) NOT NULL,
  nick_name varchar(120) DEFAULT NULL,
  owner varchar(120) DEFAULT NULL,
  ddl_log_tblname varchar(120) DEFAULT NULL,
  when_created timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  business varchar(120) DEFAULT NULL,
  memo text DEFAULT NULL,
  status enum('inuse','deleted') NOT NULL DEFAULT 'inuse',
  ha_mode enum('no_rep','mgr','rbr') NOT NULL DEFAULT 'rbr',
  PRIMARY KEY (id),
  UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE shards (
  id int unsigned NOT NULL AUTO_INCREMENT,
  name varchar(64) NOT NULL,
  when_created timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  num_nodes int unsigned NOT NULL DEFAULT 0,
  space_volumn bigint unsigned NOT NULL DEFAULT 0,
  num_tablets int unsigned NOT NULL DEFAULT 0,
  db_cluster_id int unsigned NOT NULL,
  sync_num int unsigned NOT NULL DEFAULT 1,
  extra_props text DEFAULT NULL,
  degrade_conf_state enum('ON','OFF') NOT NULL DEFAULT 'OFF',
  degrade_run_state enum('ON','OFF') NOT NULL DEFAULT 'OFF',
  degrade_conf_time int NOT NULL DEFAULT 10,
  status enum('inuse','deleted') NOT NULL DEFAULT 'inuse',
  coldbackup_period varchar(64) DEFAULT '01:00:00-02:00:00',
  PRIMARY KEY (id),
  UNIQUE KEY cluster_shard_name (db_cluster_id, name),
  CONSTRAINT shards_cluster FOREIGN KEY (db_cluster_id) REFERENCES db_clusters (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE shard_nodes (
  id int unsigned NOT NULL AUTO_INCREMENT,
  ro_weight smallint NOT NULL DEFAULT 0,
  hostaddr varchar(512) NOT NULL,
  port int unsigned NOT NULL,
  user_name varchar(64) NOT NULL,
  passwd varchar(120) NOT NULL,
  shard_id int unsigned NOT NULL,
  db_cluster_id int unsigned NOT NULL,
  svr_node_id int unsigned DEFAULT NULL,
  when_created timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  master_priority int NOT NULL DEFAULT 1,
  status enum('creating','inactive','active','deleted','manual_stop') NOT NULL DEFAULT 'creating',
  cpu_cores int unsigned NOT NULL DEFAULT 0,
  initial_storage_GB int unsigned NOT NULL DEFAULT 0,
  max_storage_GB int unsigned NOT NULL DEFAULT 0,
  innodb_buffer_pool_MB int unsigned NOT NULL DEFAULT 0,
  rocksdb_buffer_pool_MB int unsigned NOT NULL DEFAULT 0,
  extra_props text DEFAULT NULL,
  sync_state enum('fsync','async') NOT NULL DEFAULT 'fsync',
  member_state enum('source','replica') NOT NULL DEFAULT 'replica',
  replica_delay int NOT NULL DEFAULT 0,
  backup_node enum('OFF','ON') NOT NULL DEFAULT 'OFF',
  PRIMARY KEY (id),
  UNIQUE KEY host_port (hostaddr, port),
  CONSTRAINT shard_nodes_shard FOREIGN KEY (shard_id) REFERENCES shards (id) ON DELETE CASCADE,
  CONSTRAINT shard_nodes_cluster FOREIGN KEY (db_cluster_id) REFERENCES db_clusters (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE comp_nodes_id_seq (
  id int unsigned NOT NULL AUTO_INCREMENT,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE comp_nodes (
  id int unsigned NOT NULL,
  name varchar(64) NOT NULL,
  hostaddr varchar(512) NOT NULL,
  port int unsigned NOT NULL,
  db_cluster_id int unsigned NOT NULL,
  when_created timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  user_name varchar(64) NOT NULL DEFAULT 'abc',
  passwd varchar(120) NOT NULL DEFAULT 'abc',
  status enum('creating','inactive','active','deleted','manual_stop') NOT NULL DEFAULT 'creating',
  svr_node_id int unsigned DEFAULT NULL,
  cpu_cores int unsigned NOT NULL DEFAULT 0,
  max_mem_MB int unsigned NOT NULL DEFAULT 0,
  max_conns int unsigned NOT NULL DEFAULT 0,
  extra_props text DEFAULT NULL,
  coldbackup_period varchar(64) DEFAULT '01:00:00-02:00:00',
  PRIMARY KEY (db_cluster_id, id),
  UNIQUE KEY comp_id (id),
  UNIQUE KEY cluster_comp_name (db_cluster_id, name),
  CONSTRAINT comp_nodes_cluster FOREIGN KEY (db_cluster_id) REFERENCES db_clusters (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE meta_db_nodes (
  id int unsigned NOT NULL AUTO_INCREMENT,
  hostaddr varchar(512) NOT NULL,
  port int unsigned NOT NULL,
  user_name varchar(64) NOT NULL,
  passwd varchar(120) NOT NULL,
  master_priority int NOT NULL DEFAULT 1,
  member_state enum('source','replica') NOT NULL DEFAULT 'replica',
  sync_state enum('fsync','async') NOT NULL DEFAULT 'fsync',
  degrade_conf_state enum('ON','OFF') NOT NULL DEFAULT 'OFF',
  degrade_run_state enum('ON','OFF') NOT NULL DEFAULT 'OFF',
  replica_delay int NOT NULL DEFAULT 0,
  degrade_conf_time int NOT NULL DEFAULT 10,
  sync_num int NOT NULL DEFAULT 1,
  nodemgr_bin_path varchar(1024) DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY host_port (hostaddr, port)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE global_configuration (
  name varchar(128) NOT NULL,
  value text NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE cluster_general_job_log (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  job_id varchar(128) DEFAULT NULL,
  related_id varchar(128) NOT NULL DEFAULT '0',
  job_type varchar(128) NOT NULL,
  status enum('not_started','ongoing','done','failed') NOT NULL DEFAULT 'not_started',
  memo longtext DEFAULT NULL,
  when_started timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  when_ended timestamp(6) NULL DEFAULT NULL,
  job_info longtext DEFAULT NULL,
  user_name varchar(128) DEFAULT NULL,
  PRIMARY KEY (id),
  KEY status_type (status, job_type)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE node_map_master (
  cluster_id int unsigned NOT NULL,
  node_host varchar(128) NOT NULL,
  master_host varchar(128) NOT NULL,
  master_uuid varchar(64) DEFAULT NULL,
  PRIMARY KEY (cluster_id, node_host)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE cluster_mgr_nodes (
  id int unsigned NOT NULL AUTO_INCREMENT,
  hostaddr varchar(512) NOT NULL,
  port int unsigned NOT NULL,
  prometheus_port int unsigned DEFAULT NULL,
  member_state enum('source','replica') NOT NULL DEFAULT 'replica',
  PRIMARY KEY (id),
  UNIQUE KEY host_port (hostaddr, port)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE commit_log_template_table (
  id int unsigned NOT NULL AUTO_INCREMENT,
  comp_node_id int unsigned NOT NULL,
  txn_id bigint unsigned NOT NULL,
  next_txn_cmd enum('commit','abort') NOT NULL,
  prepare_ts timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  written_shards json DEFAULT NULL,
  PRIMARY KEY (id, comp_node_id, txn_id),
  UNIQUE KEY comp_txn (comp_node_id, txn_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE ddl_ops_log_template_table (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  objname varchar(64) NOT NULL,
  db_name varchar(64) NOT NULL,
  schema_name varchar(64) NOT NULL,
  user_name varchar(64) NOT NULL,
  role_name varchar(64) NOT NULL,
  search_path text NOT NULL,
  optype enum('create','drop','rename','alter','replace','remap_shardid','others') NOT NULL,
  objtype enum('db','index','matview','partition','schema','seq','table','func','role_or_group','proc','stats','user','view','others') NOT NULL,
  when_logged timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  sql_src text NOT NULL,
  sql_storage_node text NOT NULL,
  target_shard_id int unsigned NOT NULL,
  initiator int unsigned NOT NULL,
  txn_id bigint unsigned NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE kl_machine_ssh (
  server_node_id int unsigned NOT NULL,
  ssh_port int unsigned NOT NULL DEFAULT 22,
  ssh_user varchar(64) NOT NULL,
  ssh_key_path varchar(1024) NOT NULL,
  PRIMARY KEY (server_node_id),
  CONSTRAINT kl_machine_ssh_node FOREIGN KEY (server_node_id) REFERENCES server_nodes (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE kl_leader_lease (
  name varchar(64) NOT NULL,
  holder varchar(255) NOT NULL,
  epoch bigint NOT NULL DEFAULT 0,
  expires_at timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
