ALTER TABLE cluster_general_job_log DROP KEY status_id;
