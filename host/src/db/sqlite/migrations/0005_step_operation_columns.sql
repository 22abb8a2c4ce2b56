-- 5: each step's table and message (`schedule` for a scheduled step) beside
-- its spec, so an operation reads only the rows of its own steps: a spec that
-- cannot be read then fails the operations it belongs to, not every
-- operation on every table.
ALTER TABLE weir_steps ADD COLUMN on_table TEXT;
ALTER TABLE weir_steps ADD COLUMN on_message TEXT;
UPDATE weir_steps SET on_table = json_extract(spec, '$.table'),
    on_message = CASE WHEN json_extract(spec, '$.schedule') IS NOT NULL THEN 'schedule' ELSE json_extract(spec, '$.message') END
    WHERE json_valid(spec);
CREATE INDEX weir_steps_operation ON weir_steps (on_table, on_message);
