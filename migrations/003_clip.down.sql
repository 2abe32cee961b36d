DROP TABLE IF EXISTS predictions;
DROP INDEX IF EXISTS embeddings_hnsw_idx;
