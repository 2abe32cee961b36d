DROP INDEX IF EXISTS assets_owner_status_taken_idx;
DROP INDEX IF EXISTS assets_owner_taken_at_idx;
