-- UAA's side of a user: where it comes from, its scopes (UAA groups) and a
-- token generation that a password change bumps to revoke its tokens.
ALTER TABLE users ADD COLUMN origin TEXT NOT NULL DEFAULT 'uaa';
ALTER TABLE users ADD COLUMN scopes TEXT NOT NULL DEFAULT 'cloud_controller.read cloud_controller.write';
ALTER TABLE users ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN updated_at TEXT NOT NULL DEFAULT '';
UPDATE users SET scopes = 'cloud_controller.admin cloud_controller.read cloud_controller.write'
    WHERE username = 'admin';
UPDATE users SET updated_at = created_at;
-- Cloud Controller's side: the users it knows (guid = the UAA user id).
CREATE TABLE cc_users (
    guid TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
-- A role: a user's type of membership in an org or a space. Every role
-- carries its org (a space role its space's org) so visibility reads one
-- table; `scope_guid` is the org or space the role is in, so one unique
-- key refuses duplicates without NULLs (which compare distinct).
CREATE TABLE roles (
    guid TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    user_guid TEXT NOT NULL,
    organization_guid TEXT NOT NULL,
    space_guid TEXT,
    scope_guid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (type, user_guid, scope_guid)
);
CREATE INDEX roles_user ON roles (user_guid);
CREATE INDEX roles_space ON roles (space_guid);
CREATE INDEX roles_org ON roles (organization_guid);
