-- Sidecars (Cloud Controller's `sidecars` with `sidecar_process_types`
-- folded into a JSON list): extra commands that run in the container of
-- every instance of the named process types. `memory_in_mb` is null when
-- unset; `origin` is `user` (Kiln reads no buildpack-declared sidecars).
CREATE TABLE sidecars (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    command TEXT NOT NULL,
    app_guid TEXT NOT NULL,
    process_types TEXT NOT NULL,
    memory_in_mb INTEGER,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (app_guid, name)
);
CREATE INDEX sidecars_app ON sidecars (app_guid);
