-- Per-cluster self-healing switches: whether the instance keeper restarts the cluster's dead
-- instances (`auto_restart`) and whether a replica HA kept out for rebuild is rebuilt by a
-- job on its own (`auto_rebuild`). No row means both on (the default); a row is written only
-- when an operator changes a switch, and goes with the cluster.
CREATE TABLE kl_cluster_policy (
  db_cluster_id int unsigned NOT NULL,
  auto_restart enum('ON','OFF') NOT NULL DEFAULT 'ON',
  auto_rebuild enum('ON','OFF') NOT NULL DEFAULT 'ON',
  PRIMARY KEY (db_cluster_id),
  CONSTRAINT kl_cluster_policy_cluster FOREIGN KEY (db_cluster_id) REFERENCES db_clusters (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
