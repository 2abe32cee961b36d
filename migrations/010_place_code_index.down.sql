DROP INDEX IF EXISTS assets_owner_place_country_code_idx;
