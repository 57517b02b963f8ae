"""The indexer: chunk document text, embed the chunks, keep them in Milvus."""
