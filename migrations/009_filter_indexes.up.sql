-- Filters of the asset list that the timeline index (006) cannot serve at
-- 100,000 photos (measured by `make bench BENCH_ONLY=queries`, which prints
-- each query's EXPLAIN):
--
-- A date range (taken_from/taken_to) is a condition on taken_at, not on the
-- timeline key, so without this Postgres walks the timeline from the newest
-- photo until it has passed the range: the whole library for an old year.
CREATE INDEX assets_owner_taken_at_idx ON assets (owner_id, taken_at);

-- status=failed/processing/rejected are a few photos in a library: walking the
-- timeline to fill a page of them reads every row. A partial index in
-- timeline order holds only those photos ('ready' ones are left out: that
-- filter keeps nearly every row and the timeline index serves it).
CREATE INDEX assets_owner_status_taken_idx
    ON assets (owner_id, status, (COALESCE(taken_at AT TIME ZONE 'UTC', created_at)) DESC, id DESC)
    WHERE status <> 'ready';
