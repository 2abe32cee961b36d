-- The place filter is an OR of four `lower(column) = lower($n)` arms (city,
-- region, country, country code). 008 indexed three of them; with the fourth
-- unindexed Postgres cannot combine the arms (BitmapOr) and scans every row
-- of the table: 10-14 ms at 20,000 assets in `bench-queries`' EXPLAIN, and
-- growing with the library.
CREATE INDEX assets_owner_place_country_code_idx
    ON assets (owner_id, lower(place_country_code)) WHERE place_country_code IS NOT NULL;
