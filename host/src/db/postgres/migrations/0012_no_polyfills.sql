-- 12: each dialect writes its own JSON and scalar max/min expressions
-- (db/dialect.rs), so the SQLite look-alike functions go.
DROP FUNCTION IF EXISTS json_set(TEXT, TEXT, BIGINT, TEXT, TEXT);
DROP FUNCTION IF EXISTS json_set(TEXT, TEXT, TEXT);
DROP FUNCTION IF EXISTS json_set(TEXT, TEXT, BIGINT);
DROP FUNCTION IF EXISTS json_set(TEXT, TEXT, JSON);
DROP FUNCTION IF EXISTS json_extract(TEXT, TEXT);
DROP FUNCTION IF EXISTS weir_json_path(TEXT);
DROP FUNCTION IF EXISTS max(BIGINT, BIGINT);
DROP FUNCTION IF EXISTS min(BIGINT, BIGINT);
