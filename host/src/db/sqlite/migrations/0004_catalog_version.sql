-- 4: a catalogue version, bumped by any change to tables, steps, plug-ins or
-- users, so the pipeline can cache them and still see every change.
CREATE TABLE weir_catalog (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT INTO weir_catalog (id, version) VALUES (1, 0);
CREATE TRIGGER weir_tables_ai AFTER INSERT ON weir_tables BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_tables_au AFTER UPDATE ON weir_tables BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_tables_ad AFTER DELETE ON weir_tables BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_steps_ai AFTER INSERT ON weir_steps BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_steps_au AFTER UPDATE ON weir_steps BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_steps_ad AFTER DELETE ON weir_steps BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_plugins_ai AFTER INSERT ON weir_plugins BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_plugins_au AFTER UPDATE ON weir_plugins BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_plugins_ad AFTER DELETE ON weir_plugins BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_users_ai AFTER INSERT ON weir_users BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_users_au AFTER UPDATE ON weir_users BEGIN UPDATE weir_catalog SET version = version + 1; END;
CREATE TRIGGER weir_users_ad AFTER DELETE ON weir_users BEGIN UPDATE weir_catalog SET version = version + 1; END;
