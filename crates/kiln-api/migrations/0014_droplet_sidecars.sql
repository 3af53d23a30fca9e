-- The sidecars a droplet's buildpacks declared (CC's `droplets.sidecars`),
-- as the staging result's JSON list; they become the app's `origin:
-- buildpack` sidecars when the droplet becomes its current one.
ALTER TABLE droplets ADD COLUMN sidecars TEXT NOT NULL DEFAULT '[]';
