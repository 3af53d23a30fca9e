-- What the API checked of a droplet a cell PUT straight into an S3
-- blobstore (its size and the object's single-PUT ETag, the MD5): the
-- staging completion finds the same object under the key before the
-- droplet becomes STAGED. NULL for droplets stored through the API.
ALTER TABLE droplets ADD COLUMN blob_size BIGINT;
ALTER TABLE droplets ADD COLUMN blob_etag TEXT;
