-- One row per cluster backup (the catalogue); its parts are rows of the original's
-- cluster_coldbackups (one per shard snapshot and per compute dump), tied by their memo's
-- `backup_id`. No foreign key to db_clusters: a backup outlives its cluster (a restore after the
-- source cluster was deleted), so the cluster's name is kept here. storage_id names a
-- backup_storage row; a storage with backups is not removed (checked by the manager).
CREATE TABLE kl_backup (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  cluster_id BIGINT NOT NULL,
  cluster_name TEXT NOT NULL,
  storage_id BIGINT NOT NULL,
  job_id BIGINT DEFAULT NULL,
  status TEXT NOT NULL DEFAULT 'ongoing' CHECK (status IN ('ongoing','done','failed')),
  started_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  ended_at TIMESTAMP DEFAULT NULL,
  bytes BIGINT NOT NULL DEFAULT 0,
  shape TEXT DEFAULT NULL,
  manifest TEXT DEFAULT NULL,
  error TEXT DEFAULT NULL
);
CREATE INDEX kl_backup_cluster ON kl_backup (cluster_id);
CREATE INDEX kl_backup_storage ON kl_backup (storage_id);
