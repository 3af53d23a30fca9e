-- The docker lifecycle (Cloud Controller's `lifecycle.type docker`): an
-- app's, a build's and a droplet's lifecycle; a docker package's image and
-- registry credentials; a staged droplet's image pinned by digest.
ALTER TABLE apps ADD COLUMN lifecycle_type TEXT NOT NULL DEFAULT 'buildpack';
ALTER TABLE builds ADD COLUMN lifecycle_type TEXT NOT NULL DEFAULT 'buildpack';
ALTER TABLE droplets ADD COLUMN lifecycle_type TEXT NOT NULL DEFAULT 'buildpack';
ALTER TABLE droplets ADD COLUMN docker_image TEXT;
ALTER TABLE packages ADD COLUMN docker_image TEXT;
ALTER TABLE packages ADD COLUMN docker_username TEXT;
ALTER TABLE packages ADD COLUMN docker_password TEXT;
