"""An oracle that does not share code with the sidecar: for a handful of documents
(English, Chinese, nested fields, lists, a numeric id and text) the chunks and
metadata Milvus must hold are written here by hand, from the documented rules:

- the indexed text is the text paths' values in order (arrays element by element,
  numbers as their decimal text), joined with a blank line; missing paths, nulls and
  empty arrays add nothing;
- chunks are cut at the coarsest boundary that keeps them within CDC_CHUNK_SIZE
  characters (paragraph, line, Chinese and Latin sentence ends, ...), neighbouring
  pieces packed together while they fit, the boundary kept at the end of its chunk and
  outer whitespace stripped;
- metadata maps each path to its value, or to the list of values where the path
  crosses an array; a missing path is left out, and so is a null one (the rows'
  JSON field stores no nulls);
- only documents matching CDC_FILTER are indexed;
- a text over CDC_MAX_TEXT_CHARS is cut to that many characters and its rows carry
  ``$truncated``: the full length (a text of exactly the limit is whole and unmarked).

The harness's own exhaustive check computes its expectation with the production
chunker and field extraction, so a bug there would cancel out; this test would not.
The embedder is the deterministic one: it is not what is under test."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from e2e_harness import running

from indexer.store import VectorStore
from sidecar.settings import Settings
from tests.conftest import COLLECTION, DATABASE
from tests.embedders import HashEmbedder

NS = f"{DATABASE}.{COLLECTION}"

Rows = dict[str, list[tuple[str, Mapping[str, Any]]]]
"""doc_key -> [(chunk text, metadata)] by chunk index."""

TIDES = {
    "_id": "tides",
    "status": "published",
    "lang": "en",
    "author": {"name": "Ada"},
    "title": "Tides",
    "sections": [
        {"heading": "Moon", "text": "The moon pulls the sea. Twice a day the water rises."},
        {"heading": "Sun", "text": "The sun helps a little."},
    ],
    "tags": ["ocean", "physics"],
}
# 5 + 2 + 52 characters is over 60: the title stays alone. The next two paragraphs
# (52 + 2 + 23) do not fit together either; the last one packs with both tags.
TIDES_ROWS = [
    ("Tides", {"lang": "en", "author.name": "Ada", "sections.heading": ["Moon", "Sun"]}),
    (
        "The moon pulls the sea. Twice a day the water rises.",
        {"lang": "en", "author.name": "Ada", "sections.heading": ["Moon", "Sun"]},
    ),
    (
        "The sun helps a little.\n\nocean\n\nphysics",
        {"lang": "en", "author.name": "Ada", "sections.heading": ["Moon", "Sun"]},
    ),
]

# 21, 20, 17 and 7 characters: one 65-character paragraph, cut after the third 。
CHANGJIANG_SENTENCES = [
    "长江是中国最长的河流，全长约六千三百公里。",
    "它发源于青藏高原，流经十一个省级行政区。",
    "长江流域的人口约占全国的三分之一。",
    "两岸风景秀丽。",
]
CHANGJIANG = {
    "_id": "changjiang",
    "status": "published",
    "lang": "zh",
    "author": {"name": "李白"},
    "title": "长江",
    "sections": [{"heading": "概况", "text": "".join(CHANGJIANG_SENTENCES)}],
    "tags": [],
}
CHANGJIANG_META = {"lang": "zh", "author.name": "李白", "sections.heading": ["概况"]}
CHANGJIANG_ROWS = [
    ("长江", CHANGJIANG_META),
    (
        "长江是中国最长的河流，全长约六千三百公里。"
        "它发源于青藏高原，流经十一个省级行政区。"
        "长江流域的人口约占全国的三分之一。",
        CHANGJIANG_META,
    ),
    ("两岸风景秀丽。", CHANGJIANG_META),
]

INVENTORY = {
    "_id": 7,
    "status": "published",
    "title": 42,
    "lang": None,
    "author": {"email": "stock@example.org"},
    "sections": [{"text": "Bolts"}, {"heading": "Spare"}, {"text": ["Nuts", "Washers"]}],
}

SENTENCES = {
    "_id": 8,
    "status": "published",
    "sections": [
        {"text": "First sentence here. Second sentence is here. Third one is the longest."}
    ],
}
# 21 + 25 + 25 characters: the first two sentences fit in 60, the third does not.
SENTENCES_ROWS: list[tuple[str, Mapping[str, Any]]] = [
    ("First sentence here. Second sentence is here.", {}),
    ("Third one is the longest.", {}),
]


# 150 characters, cut at 100 (twenty words), then packed twelve words to a chunk.
LONG = {"_id": "long", "status": "published", "title": "Long " * 30}
LONG_ROWS: list[tuple[str, Mapping[str, Any]]] = [
    (" ".join(["Long"] * 12), {"$truncated": 150}),
    (" ".join(["Long"] * 8), {"$truncated": 150}),
]


async def indexed(store: VectorStore) -> Rows:
    """Every document's rows in Milvus, as (text, metadata) by chunk index."""
    keys = await store.chunk_ids_by_document()
    rows: Rows = {}
    for doc_key in sorted(keys):
        chunks = await store.chunks_of(doc_key)
        assert [c.chunk_index for c in chunks] == list(range(len(chunks))), doc_key
        rows[doc_key] = [(c.text, c.metadata) for c in chunks]
    return rows


async def test_the_index_holds_exactly_the_hand_written_chunks_and_metadata(
    make_settings: Callable[..., Settings], mongo: Any, redis_client: aioredis.Redis
) -> None:
    settings = make_settings(
        text_fields=["title", "sections.text", "tags"],
        metadata_fields=["lang", "author.name", "sections.heading"],
        filter={"status": "published"},
        chunk_size=60,
        chunk_overlap=0,
        max_text_chars=100,  # TIDES's text is exactly 100 characters
    )
    articles = mongo[DATABASE][COLLECTION]
    await articles.insert_many([TIDES, CHANGJIANG])  # found by the first start's scan

    async with running(settings, redis_client, HashEmbedder()) as service:
        await service.applied(mongo)
        assert await indexed(service.sidecar.store) == {
            f"{NS}/tides": TIDES_ROWS,
            f"{NS}/changjiang": CHANGJIANG_ROWS,
        }

        await articles.insert_many(
            [INVENTORY, SENTENCES, LONG, {"_id": "draft", "status": "draft", "title": "Not yet"}]
        )
        await service.applied(mongo)
        assert await indexed(service.sidecar.store) == {
            f"{NS}/tides": TIDES_ROWS,
            f"{NS}/changjiang": CHANGJIANG_ROWS,
            f"{NS}/$num:7": [("42\n\nBolts\n\nNuts\n\nWashers", {"sections.heading": ["Spare"]})],
            f"{NS}/$num:8": SENTENCES_ROWS,
            f"{NS}/long": LONG_ROWS,
        }

        await articles.update_one({"_id": "tides"}, {"$set": {"status": "archived"}})
        await articles.update_one({"_id": "draft"}, {"$set": {"status": "published"}})
        await articles.update_one({"_id": 7}, {"$set": {"sections.1.heading": "Extra"}})
        await articles.update_one({"_id": "changjiang"}, {"$pop": {"sections": 1}})
        await service.applied(mongo)
        assert await indexed(service.sidecar.store) == {
            f"{NS}/changjiang": [("长江", {"lang": "zh", "author.name": "李白"})],
            f"{NS}/$num:7": [("42\n\nBolts\n\nNuts\n\nWashers", {"sections.heading": ["Extra"]})],
            f"{NS}/$num:8": SENTENCES_ROWS,
            f"{NS}/long": LONG_ROWS,
            f"{NS}/draft": [("Not yet", {})],
        }
