DROP TABLE IF EXISTS kl_cluster_policy;
