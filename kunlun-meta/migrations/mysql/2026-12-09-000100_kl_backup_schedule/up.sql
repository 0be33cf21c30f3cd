-- A cluster's scheduled backups and their retention: every day, once the UTC window
-- 'HH:MM:SS-HH:MM:SS' (`backup_window`, may cross midnight) opens, the leader takes a
-- backup_cluster backup onto storage `storage_id` unless one was started since the window
-- opened; then it removes the cluster's done backups past the newest `keep_count` and those
-- older than `keep_days` days (never the newest done one), and failed ones older than
-- `keep_days`. NULL keeps: no limit. At most one schedule per cluster; it goes with the
-- cluster (cascade). A storage a schedule names is not removed (checked by the manager).
CREATE TABLE kl_backup_schedule (
  db_cluster_id int unsigned NOT NULL,
  storage_id int unsigned NOT NULL,
  backup_window varchar(17) NOT NULL,
  keep_count int unsigned DEFAULT NULL,
  keep_days int unsigned DEFAULT NULL,
  enabled enum('ON','OFF') NOT NULL DEFAULT 'ON',
  updated_at timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  PRIMARY KEY (db_cluster_id),
  KEY kl_backup_schedule_storage (storage_id),
  CONSTRAINT kl_backup_schedule_cluster FOREIGN KEY (db_cluster_id) REFERENCES db_clusters (id) ON DELETE CASCADE,
  CONSTRAINT kl_backup_schedule_keep CHECK ((keep_count IS NULL OR keep_count >= 1) AND (keep_days IS NULL OR keep_days >= 1))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
