-- What upload clients tell us beyond the bytes (Immich's CLI and apps send
-- all of it): a SHA-1 for their duplicate check, the file's own times,
-- favourite and visibility flags, and an XMP sidecar kept with the asset.
ALTER TABLE assets
    -- SHA-1 of the original, computed in the same pass as content_hash. Not
    -- unique: SHA-1 collisions can be made, BLAKE3 stays the identity.
    ADD COLUMN sha1             bytea CHECK (octet_length(sha1) = 20),
    ADD COLUMN file_created_at  timestamptz,
    ADD COLUMN file_modified_at timestamptz,
    -- Where taken_at came from: the file's own metadata (EXIF, XMP), its XMP
    -- sidecar, or the client's file time when neither has a date.
    ADD COLUMN taken_at_source  text CHECK (taken_at_source IN ('metadata', 'sidecar', 'file_time')),
    ADD COLUMN is_favorite      boolean NOT NULL DEFAULT false,
    ADD COLUMN visibility       text NOT NULL DEFAULT 'timeline'
                                CHECK (visibility IN ('timeline', 'archive', 'hidden', 'locked'));

CREATE INDEX assets_owner_sha1_idx ON assets (owner_id, sha1);

-- An XMP sidecar uploaded with its asset, kept as sent.
CREATE TABLE sidecars (
    asset_id    uuid PRIMARY KEY REFERENCES assets (id) ON DELETE CASCADE,
    file_name   text NOT NULL,
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
