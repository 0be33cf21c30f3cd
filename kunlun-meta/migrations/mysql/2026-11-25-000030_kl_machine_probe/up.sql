-- What the last SSH probe of a machine found: OS (`ID VERSION_ID` of /etc/os-release), kernel
-- (`uname -sr`), each data dir's free space as JSON `[{"path":..,"free_mb":..,"exists":..}]`,
-- and when. One row per machine, written with the machine (registration, or an update that
-- re-probed it), removed with it; no row means the machine was stored unprobed.
-- `server_nodes` keeps its Kunlun columns unchanged.
CREATE TABLE kl_machine_probe (
  server_node_id int unsigned NOT NULL,
  os varchar(255) NOT NULL,
  kernel varchar(255) NOT NULL,
  data_dirs_json text NOT NULL,
  probed_at timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  PRIMARY KEY (server_node_id),
  CONSTRAINT kl_machine_probe_node FOREIGN KEY (server_node_id) REFERENCES server_nodes (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
