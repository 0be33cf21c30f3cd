DROP TABLE IF EXISTS kl_backup_schedule;
