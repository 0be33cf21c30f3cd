DROP TABLE IF EXISTS kl_machine_probe;
