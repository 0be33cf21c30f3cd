-- One row per cluster backup (the catalogue); its parts are rows of the original's
-- cluster_coldbackups (one per shard snapshot and per compute dump), tied by their memo's
-- `backup_id`. No foreign key to db_clusters: a backup outlives its cluster (a restore after the
-- source cluster was deleted), so the cluster's name is kept here. storage_id names a
-- backup_storage row; a storage with backups is not removed (checked by the manager).
CREATE TABLE kl_backup (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  cluster_id int unsigned NOT NULL,
  cluster_name varchar(120) NOT NULL,
  storage_id int unsigned NOT NULL,
  job_id bigint unsigned DEFAULT NULL,
  status enum('ongoing','done','failed') NOT NULL DEFAULT 'ongoing',
  started_at timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  ended_at timestamp(6) NULL DEFAULT NULL,
  bytes bigint unsigned NOT NULL DEFAULT 0,
  shape longtext DEFAULT NULL,
  manifest varchar(1024) DEFAULT NULL,
  error text DEFAULT NULL,
  PRIMARY KEY (id),
  KEY kl_backup_cluster (cluster_id),
  KEY kl_backup_storage (storage_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
