CREATE TABLE users (
    guid TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE organizations (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE spaces (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    organization_guid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_guid, name)
);
CREATE TABLE domains (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE stacks (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    is_default INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE buildpacks (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    stack TEXT,
    position INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    locked INTEGER NOT NULL,
    state TEXT NOT NULL,
    filename TEXT,
    sha256 TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE jobs (
    guid TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    state TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_guid TEXT NOT NULL,
    errors TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE apps (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    space_guid TEXT NOT NULL,
    state TEXT NOT NULL,
    buildpacks TEXT NOT NULL,
    stack TEXT NOT NULL,
    environment_variables TEXT NOT NULL,
    droplet_guid TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (space_guid, name)
);
CREATE TABLE processes (
    guid TEXT PRIMARY KEY,
    app_guid TEXT NOT NULL,
    type TEXT NOT NULL,
    command TEXT,
    instances INTEGER NOT NULL,
    memory_in_mb INTEGER NOT NULL,
    disk_in_mb INTEGER NOT NULL,
    health_check_type TEXT NOT NULL,
    health_check_endpoint TEXT,
    health_check_timeout INTEGER,
    health_check_invocation_timeout INTEGER,
    version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (app_guid, type)
);
CREATE TABLE packages (
    guid TEXT PRIMARY KEY,
    app_guid TEXT NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    sha256 TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE builds (
    guid TEXT PRIMARY KEY,
    app_guid TEXT NOT NULL,
    package_guid TEXT NOT NULL,
    droplet_guid TEXT,
    state TEXT NOT NULL,
    error TEXT,
    buildpacks TEXT NOT NULL,
    stack TEXT NOT NULL,
    staging_memory_in_mb INTEGER NOT NULL,
    staging_disk_in_mb INTEGER NOT NULL,
    created_by_guid TEXT NOT NULL,
    created_by_name TEXT NOT NULL,
    created_by_email TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE droplets (
    guid TEXT PRIMARY KEY,
    app_guid TEXT NOT NULL,
    package_guid TEXT NOT NULL,
    build_guid TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    process_types TEXT NOT NULL,
    buildpacks TEXT NOT NULL,
    execution_metadata TEXT NOT NULL,
    sha256 TEXT,
    stack TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE routes (
    guid TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    path TEXT NOT NULL,
    domain_guid TEXT NOT NULL,
    space_guid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (host, domain_guid, path)
);
CREATE TABLE route_destinations (
    guid TEXT PRIMARY KEY,
    route_guid TEXT NOT NULL,
    app_guid TEXT NOT NULL,
    process_type TEXT NOT NULL,
    port INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
