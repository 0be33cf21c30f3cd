-- Where each installed instance lives on its machine: its base dir
-- (`<data_dir>/kunlun/<kind>_<port>`), recorded at install, so uninstall, the SSH fence and
-- rejoin find it even after the machine's `data_dirs` changed. One row per node, removed with
-- it (`comp_nodes` has a two-column key, so its rows are removed by the code that removes
-- compute nodes, not by a foreign key); no row (a node installed before this table) means the dir is computed from the machine.
-- `shard_nodes` and `comp_nodes` keep their Kunlun columns unchanged.
CREATE TABLE kl_shard_node_dir (
  shard_node_id int unsigned NOT NULL,
  base_dir varchar(1024) NOT NULL,
  PRIMARY KEY (shard_node_id),
  CONSTRAINT kl_shard_node_dir_node FOREIGN KEY (shard_node_id) REFERENCES shard_nodes (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE kl_comp_node_dir (
  comp_node_id int unsigned NOT NULL,
  base_dir varchar(1024) NOT NULL,
  PRIMARY KEY (comp_node_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
