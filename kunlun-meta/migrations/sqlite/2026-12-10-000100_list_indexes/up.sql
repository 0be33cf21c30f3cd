-- Indexes of what the API's lists and the engine select by, at fleet scale (10,000 machines,
-- 1,000 clusters): a shard's and a cluster's storage nodes (`/v1/shards/{id}/nodes`,
-- `/v1/clusters/{id}`, the cascade of a shard's or cluster's delete) were a scan of every
-- node (MySQL has these two through its foreign keys).
CREATE INDEX shard_nodes_shard ON shard_nodes (shard_id);
CREATE INDEX shard_nodes_cluster ON shard_nodes (db_cluster_id);
-- The jobs of one status newest first (`/v1/jobs?status=`): the status's rows in id order,
-- instead of every row of the status sorted for each page.
CREATE INDEX cluster_general_job_log_status_id ON cluster_general_job_log (status, id);
