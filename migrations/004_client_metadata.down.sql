DROP TABLE IF EXISTS sidecars;
DROP INDEX IF EXISTS assets_owner_sha1_idx;
ALTER TABLE assets
    DROP COLUMN IF EXISTS sha1,
    DROP COLUMN IF EXISTS file_created_at,
    DROP COLUMN IF EXISTS file_modified_at,
    DROP COLUMN IF EXISTS taken_at_source,
    DROP COLUMN IF EXISTS is_favorite,
    DROP COLUMN IF EXISTS visibility;
