-- The facts JSON keeps the place names; only the typed columns go.
ALTER TABLE assets
    DROP COLUMN IF EXISTS place_city,
    DROP COLUMN IF EXISTS place_region,
    DROP COLUMN IF EXISTS place_country,
    DROP COLUMN IF EXISTS place_country_code;
