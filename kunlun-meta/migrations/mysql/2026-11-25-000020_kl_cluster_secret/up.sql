-- The random per-cluster passwords of the system users (manager `clustmgr`, replication
-- `repl`, compute-to-storage `pgx` on storage nodes; `abc` on compute nodes), so later jobs
-- (add_nodes, add_shards, add_comps) install new instances with the same users. Written with
-- the cluster row, removed with it; never listed by any endpoint.
CREATE TABLE kl_cluster_secret (
  cluster_id bigint NOT NULL,
  manager_pwd varchar(255) NOT NULL,
  repl_pwd varchar(255) NOT NULL,
  pgx_pwd varchar(255) NOT NULL,
  comp_pwd varchar(255) NOT NULL,
  PRIMARY KEY (cluster_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
