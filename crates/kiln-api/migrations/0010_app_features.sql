-- App features (CC's `enable_ssh` and `revisions_enabled` columns on apps):
-- both on by default, as Cloud Controller's defaults are.
ALTER TABLE apps ADD COLUMN enable_ssh INTEGER NOT NULL DEFAULT 1;
ALTER TABLE apps ADD COLUMN revisions_enabled INTEGER NOT NULL DEFAULT 1;
