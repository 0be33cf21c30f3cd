-- API tokens: the SHA-256 (hex) of each random bearer secret, never the secret itself, with
-- the token's name and role. A revoked token keeps its row (revoked_at set), so a name is never
-- reused and "some token was ever created" stays true: the daemon's open mode ends for good.
CREATE TABLE kl_api_token (
  id bigint NOT NULL AUTO_INCREMENT,
  name varchar(64) NOT NULL,
  role varchar(16) NOT NULL,
  token_hash char(64) NOT NULL,
  created_at timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  last_used_at timestamp(6) NULL DEFAULT NULL,
  revoked_at timestamp(6) NULL DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY name (name),
  UNIQUE KEY token_hash (token_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
-- The audit trail: one row per mutating API request (who by token name, what, from where,
-- the answer's status, when).
CREATE TABLE kl_audit (
  id bigint NOT NULL AUTO_INCREMENT,
  at timestamp(6) NOT NULL DEFAULT current_timestamp(6),
  token_name varchar(64) DEFAULT NULL,
  method varchar(16) NOT NULL,
  path varchar(1024) NOT NULL,
  client varchar(64) NOT NULL,
  status bigint NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
