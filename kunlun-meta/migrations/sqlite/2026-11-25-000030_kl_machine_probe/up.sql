-- What the last SSH probe of a machine found: OS (`ID VERSION_ID` of /etc/os-release), kernel
-- (`uname -sr`), each data dir's free space as JSON `[{"path":..,"free_mb":..,"exists":..}]`,
-- and when. One row per machine, written with the machine (registration, or an update that
-- re-probed it), removed with it; no row means the machine was stored unprobed.
-- `server_nodes` keeps its Kunlun columns unchanged.
CREATE TABLE kl_machine_probe (
  server_node_id BIGINT NOT NULL PRIMARY KEY REFERENCES server_nodes (id) ON DELETE CASCADE,
  os TEXT NOT NULL,
  kernel TEXT NOT NULL,
  data_dirs_json TEXT NOT NULL,
  probed_at TIMESTAMP NOT NULL
);
