-- The web app's timeline lists an owner's assets newest first by when they
-- were taken, else when they were uploaded (GET /api/v1/assets?order=taken);
-- this index keeps that a short index scan at any library size.
CREATE INDEX assets_owner_taken_idx
    ON assets (owner_id, (COALESCE(taken_at AT TIME ZONE 'UTC', created_at)) DESC, id DESC);
