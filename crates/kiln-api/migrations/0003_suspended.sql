-- Cloud Foundry's `suspended` flag on organizations and spaces.
ALTER TABLE organizations ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
ALTER TABLE spaces ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
