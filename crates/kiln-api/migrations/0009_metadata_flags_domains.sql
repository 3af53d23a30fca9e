-- Labels and annotations of every resource, keyed by the resource's guid
-- (guids never collide across tables). A key is its DNS prefix ('' when it
-- has none) and its name, as Cloud Controller stores them; label selectors
-- query these tables by key and value.
CREATE TABLE metadata_labels (
    resource_guid TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    key_name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (resource_guid, key_prefix, key_name)
);
CREATE INDEX metadata_labels_by_key ON metadata_labels (key_prefix, key_name, value);
CREATE TABLE metadata_annotations (
    resource_guid TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    key_name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (resource_guid, key_prefix, key_name)
);
-- The running and staging environment variable groups.
CREATE TABLE environment_variable_groups (
    name TEXT PRIMARY KEY,
    environment_json TEXT NOT NULL,
    updated_at TEXT
);
INSERT INTO environment_variable_groups (name, environment_json) VALUES ('running', '{}');
INSERT INTO environment_variable_groups (name, environment_json) VALUES ('staging', '{}');
-- Feature flags an admin set; a flag with no row has its default.
CREATE TABLE feature_flags (
    name TEXT PRIMARY KEY,
    enabled BOOLEAN NOT NULL,
    error_message TEXT,
    updated_at TEXT NOT NULL
);
