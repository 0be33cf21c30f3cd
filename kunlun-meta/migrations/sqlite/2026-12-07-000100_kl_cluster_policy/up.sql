-- Per-cluster self-healing switches: whether the instance keeper restarts the cluster's dead
-- instances (`auto_restart`) and whether a replica HA kept out for rebuild is rebuilt by a
-- job on its own (`auto_rebuild`). No row means both on (the default); a row is written only
-- when an operator changes a switch, and goes with the cluster.
CREATE TABLE kl_cluster_policy (
  db_cluster_id BIGINT NOT NULL PRIMARY KEY REFERENCES db_clusters (id) ON DELETE CASCADE,
  auto_restart TEXT NOT NULL DEFAULT 'ON' CHECK (auto_restart IN ('ON','OFF')),
  auto_rebuild TEXT NOT NULL DEFAULT 'ON' CHECK (auto_rebuild IN ('ON','OFF'))
);
