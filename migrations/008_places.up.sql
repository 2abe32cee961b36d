-- Place names from the `places` stage (offline reverse geocoding of the GPS
-- facts): typed columns, so that GET /api/v1/assets?place= can filter on them.
ALTER TABLE assets
    ADD COLUMN place_city text,
    ADD COLUMN place_region text,
    ADD COLUMN place_country text,
    ADD COLUMN place_country_code text;

-- The place filter matches any of city, region, country or country code,
-- case-insensitively; one index per column keeps each arm an index scan.
CREATE INDEX assets_owner_place_city_idx ON assets (owner_id, lower(place_city)) WHERE place_city IS NOT NULL;
CREATE INDEX assets_owner_place_region_idx ON assets (owner_id, lower(place_region)) WHERE place_region IS NOT NULL;
CREATE INDEX assets_owner_place_country_idx ON assets (owner_id, lower(place_country)) WHERE place_country IS NOT NULL;

-- Assets processed before this migration keep their place facts (if a places
-- stage ran) in `facts`: copy them over so the filter finds them too.
UPDATE assets SET
    place_city = facts ->> 'place_city',
    place_region = facts ->> 'place_region',
    place_country = facts ->> 'place_country',
    place_country_code = facts ->> 'place_country_code'
WHERE facts ? 'place_country_code';
