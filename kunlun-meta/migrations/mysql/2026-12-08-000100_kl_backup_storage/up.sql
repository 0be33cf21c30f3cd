-- Backup storages are found by name (`create_backup_storage`, `kunlunctl backup-storage`):
-- one storage per name. The table is the original's (kunlun_compat); ours are stype 'OTHER'
-- with conn_str 'sshdir://<hostaddr><path>' and extra '{"kind":"ssh_dir","path":..,"machine_id":..}'.
CREATE UNIQUE INDEX backup_storage_name ON backup_storage (name);
