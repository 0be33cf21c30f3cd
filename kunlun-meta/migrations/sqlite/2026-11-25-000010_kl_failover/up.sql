-- Records of shard failovers and switchovers (also refused and failed ones), with their
-- per-phase timeline as JSON text, so `kunlunctl failover list` survives a restart.
CREATE TABLE kl_failover (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  cluster_id BIGINT NOT NULL,
  shard_id BIGINT NOT NULL,
  kind TEXT NOT NULL,
  started_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  old_primary BIGINT NOT NULL,
  new_primary BIGINT DEFAULT NULL,
  outcome TEXT NOT NULL,
  proven_lossless BIGINT NOT NULL DEFAULT 0,
  possible_loss TEXT DEFAULT NULL,
  reason TEXT DEFAULT NULL,
  fence TEXT DEFAULT NULL,
  phases TEXT NOT NULL DEFAULT '[]',
  old_primary_fate TEXT DEFAULT NULL,
  total_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX kl_failover_shard ON kl_failover (shard_id, id);
