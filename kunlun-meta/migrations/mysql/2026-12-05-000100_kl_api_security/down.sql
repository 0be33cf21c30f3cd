DROP TABLE kl_audit;
DROP TABLE kl_api_token;
