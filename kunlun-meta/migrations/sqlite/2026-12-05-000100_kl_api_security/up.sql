-- API tokens: the SHA-256 (hex) of each random bearer secret, never the secret itself, with
-- the token's name and role. A revoked token keeps its row (revoked_at set), so a name is never
-- reused and "some token was ever created" stays true: the daemon's open mode ends for good.
CREATE TABLE kl_api_token (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created_at TIMESTAMP NOT NULL,
  last_used_at TIMESTAMP DEFAULT NULL,
  revoked_at TIMESTAMP DEFAULT NULL
);
-- The audit trail: one row per mutating API request (who by token name, what, from where,
-- the answer's status, when).
CREATE TABLE kl_audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at TIMESTAMP NOT NULL,
  token_name TEXT DEFAULT NULL,
  method TEXT NOT NULL,
  path TEXT NOT NULL,
  client TEXT NOT NULL,
  status BIGINT NOT NULL
);
