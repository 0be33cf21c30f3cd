-- A cluster's scheduled backups and their retention: every day, once the UTC window
-- 'HH:MM:SS-HH:MM:SS' (`backup_window`, may cross midnight) opens, the leader takes a
-- backup_cluster backup onto storage `storage_id` unless one was started since the window
-- opened; then it removes the cluster's done backups past the newest `keep_count` and those
-- older than `keep_days` days (never the newest done one), and failed ones older than
-- `keep_days`. NULL keeps: no limit. At most one schedule per cluster; it goes with the
-- cluster (cascade). A storage a schedule names is not removed (checked by the manager).
CREATE TABLE kl_backup_schedule (
  db_cluster_id BIGINT NOT NULL PRIMARY KEY REFERENCES db_clusters (id) ON DELETE CASCADE,
  storage_id BIGINT NOT NULL,
  backup_window TEXT NOT NULL,
  keep_count BIGINT DEFAULT NULL CHECK (keep_count IS NULL OR keep_count >= 1),
  keep_days BIGINT DEFAULT NULL CHECK (keep_days IS NULL OR keep_days >= 1),
  enabled TEXT NOT NULL DEFAULT 'ON' CHECK (enabled IN ('ON','OFF')),
  updated_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX kl_backup_schedule_storage ON kl_backup_schedule (storage_id);
