-- 8: a plug-in's current version is its newest one not rolled back; version
-- numbers are never reused, even after a plug-in is removed (a process
-- that prepared version N of a name must never run another component as N).
ALTER TABLE weir_plugins ADD COLUMN retired INTEGER NOT NULL DEFAULT 0;
CREATE TABLE weir_plugin_versions (name TEXT PRIMARY KEY, last INTEGER NOT NULL);
INSERT INTO weir_plugin_versions (name, last) SELECT name, MAX(version) FROM weir_plugins GROUP BY name;
