DROP TABLE IF EXISTS kl_comp_node_dir;
DROP TABLE IF EXISTS kl_shard_node_dir;
