-- The random per-cluster passwords of the system users (manager `clustmgr`, replication
-- `repl`, compute-to-storage `pgx` on storage nodes; `abc` on compute nodes), so later jobs
-- (add_nodes, add_shards, add_comps) install new instances with the same users. Written with
-- the cluster row, removed with it; never listed by any endpoint.
CREATE TABLE kl_cluster_secret (
  cluster_id BIGINT NOT NULL PRIMARY KEY,
  manager_pwd TEXT NOT NULL,
  repl_pwd TEXT NOT NULL,
  pgx_pwd TEXT NOT NULL,
  comp_pwd TEXT NOT NULL
);
