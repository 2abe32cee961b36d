-- API keys: only a BLAKE3 hash of each key is stored; the key itself is
-- shown once, when it is created.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The first characters of the key, to tell keys apart in listings.
    prefix      text NOT NULL,
    key_hash    text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_user_idx ON api_keys (user_id);
