DROP TABLE IF EXISTS cluster_roll_back_record;
DROP TABLE IF EXISTS table_move_jobs;
DROP TABLE IF EXISTS cluster_shard_topology;
DROP TABLE IF EXISTS rbr_consfailover;
DROP TABLE IF EXISTS mysql_pg_install_log;
DROP TABLE IF EXISTS restore_log;
DROP TABLE IF EXISTS cluster_shard_backup_restore_log;
DROP TABLE IF EXISTS cluster_coldbackups;
DROP TABLE IF EXISTS backup_storage;
DROP TABLE IF EXISTS server_nodes_conn_stats;
DROP TABLE IF EXISTS server_nodes_stats;
DROP TABLE IF EXISTS data_centers;

-- job_type back to NOT NULL without a default: the same rebuild as up.sql, in reverse.
CREATE TABLE kl_cluster_general_job_log_old (
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
INSERT INTO kl_cluster_general_job_log_old
  (id, job_id, related_id, job_type, status, memo, when_started, when_ended, job_info, user_name)
  SELECT id, job_id, related_id, job_type, status, memo, when_started, when_ended, job_info,
    user_name
  FROM cluster_general_job_log;
DELETE FROM sqlite_sequence WHERE name = 'kl_cluster_general_job_log_old';
INSERT INTO sqlite_sequence (name, seq)
  SELECT 'kl_cluster_general_job_log_old', seq FROM sqlite_sequence
  WHERE name = 'cluster_general_job_log';
DROP TABLE cluster_general_job_log;
ALTER TABLE kl_cluster_general_job_log_old RENAME TO cluster_general_job_log;
CREATE INDEX cluster_general_job_log_status_type ON cluster_general_job_log (status, job_type);
