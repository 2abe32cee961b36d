-- CLIP results: embeddings get an HNSW index for cosine search, and the
-- classifier's labels get a table of their own.
CREATE INDEX embeddings_hnsw_idx ON embeddings USING hnsw (embedding vector_cosine_ops);

CREATE TABLE predictions (
    asset_id  uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    label     text NOT NULL,
    score     real NOT NULL,
    source    text NOT NULL,
    PRIMARY KEY (asset_id, label)
);
