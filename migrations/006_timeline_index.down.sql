DROP INDEX IF EXISTS assets_owner_taken_idx;
