-- Lumilio's own schema, on migration line `app` (River's tables are on line `main`).

-- The embeddings table needs pgvector. The extension is left in place on the
-- way down: other schemas in the same database may use it.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 128),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE assets (
    id            uuid PRIMARY KEY,
    owner_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    file_name     text NOT NULL,
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    -- BLAKE3 of the original, lower-case hex.
    content_hash  text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    status        text NOT NULL DEFAULT 'processing'
                  CHECK (status IN ('processing', 'ready', 'rejected', 'failed')),
    reason        text,
    -- The River job that processes the asset (river_job.id).
    job_id        bigint,
    -- Well-known facts from the pipeline, typed for filtering and sorting.
    width           integer,
    height          integer,
    taken_at        timestamp,
    taken_at_offset text,
    make            text,
    model           text,
    lens            text,
    exposure_time   double precision,
    f_number        double precision,
    iso             integer,
    focal_length    double precision,
    gps_latitude    double precision,
    gps_longitude   double precision,
    gps_altitude    double precision,
    orientation     smallint,
    -- Every fact the pipeline produced, including the typed ones above.
    facts         jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT assets_owner_hash_unique UNIQUE (owner_id, content_hash)
);

CREATE INDEX assets_owner_created_idx ON assets (owner_id, created_at DESC, id DESC);

-- One row per stage per asset: the last outcome of that stage.
CREATE TABLE stage_results (
    asset_id     uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    stage        text NOT NULL,
    position     integer NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('ok', 'skipped', 'rejected', 'failed')),
    duration_ms  double precision NOT NULL,
    error        text,
    warnings     jsonb NOT NULL DEFAULT '[]',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_id, stage)
);

-- Derived images (thumbnails); the bytes live under STORAGE_PATH.
CREATE TABLE renditions (
    asset_id      uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (name ~ '^[a-z0-9_-]{1,64}$'),
    content_type  text NOT NULL,
    width         integer NOT NULL,
    height        integer NOT NULL,
    size          bigint NOT NULL,
    PRIMARY KEY (asset_id, name)
);

-- CLIP image embeddings (filled by the process_clip worker).
CREATE TABLE embeddings (
    asset_id    uuid PRIMARY KEY REFERENCES assets (id) ON DELETE CASCADE,
    model_id    text NOT NULL,
    embedding   vector(512) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
