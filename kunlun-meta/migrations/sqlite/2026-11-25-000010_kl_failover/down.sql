DROP TABLE IF EXISTS kl_failover;
