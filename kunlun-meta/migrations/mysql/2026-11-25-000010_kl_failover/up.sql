-- Records of shard failovers and switchovers (also refused and failed ones), with their
-- per-phase timeline as JSON text, so `kunlunctl failover list` survives a restart.
CREATE TABLE kl_failover (
  id bigint NOT NULL AUTO_INCREMENT,
  cluster_id bigint NOT NULL,
  shard_id bigint NOT NULL,
  kind varchar(32) NOT NULL,
  started_at timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  old_primary bigint NOT NULL,
  new_primary bigint DEFAULT NULL,
  outcome varchar(32) NOT NULL,
  proven_lossless bigint NOT NULL DEFAULT 0,
  possible_loss text DEFAULT NULL,
  reason text DEFAULT NULL,
  fence text DEFAULT NULL,
  phases longtext NOT NULL,
  old_primary_fate text DEFAULT NULL,
  total_ms bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  KEY shard_id (shard_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
