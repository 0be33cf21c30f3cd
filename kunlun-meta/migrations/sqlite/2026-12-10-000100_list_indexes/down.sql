DROP INDEX cluster_general_job_log_status_id;
DROP INDEX shard_nodes_cluster;
DROP INDEX shard_nodes_shard;
