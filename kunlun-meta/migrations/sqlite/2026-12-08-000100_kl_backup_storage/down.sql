DROP INDEX IF EXISTS backup_storage_name;
