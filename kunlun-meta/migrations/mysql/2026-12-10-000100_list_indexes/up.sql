-- The jobs of one status newest first (`/v1/jobs?status=`): the status's rows in id order,
-- instead of every row of the status sorted for each page. (The storage nodes of a shard and
-- of a cluster are indexed here through their foreign keys; SQLite gets those indexes in its
-- migration of the same name.)
ALTER TABLE cluster_general_job_log ADD KEY status_id (status, id);
