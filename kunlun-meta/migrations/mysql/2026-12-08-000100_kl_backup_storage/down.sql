DROP INDEX backup_storage_name ON backup_storage;
