"""judge() decides one document's verdict from the source, its version record and its
rows; expected() says what the source requires. Both without I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from cdc.fields import IndexedText, MetadataFields, UserField
from cdc.mapping import ChangeMapper, ChangeOrigin
from checkpoints.keys import Keys
from checkpoints.versions import VersionRecord, VersionStore
from indexer.plan import plan_document
from indexer.store import VectorStore
from operations.context import IndexView
from operations.inspection import Expected, Verdict, expected, judge

NOW = (1_764_000_000 << 32) | 3
"""The cluster time each judgment is made at (seconds << 32 | increment)."""
EARLIER = (1_763_999_000 << 32) | 1
FUTURE = (1_764_000_100 << 32) | 1
IDS = ("c0", "c1")
SOURCE = Expected(content_hash="text-v2", metadata_hash="meta-v2", text_chars=12)
FILTERED = "the pipeline's filter (CDC_FILTER) excludes it"


def record(
    *,
    version: int = EARLIER,
    content: str = SOURCE.content_hash,
    metadata: str = SOURCE.metadata_hash,
    chunk_ids: tuple[str, ...] = IDS,
    deleted: bool = False,
) -> VersionRecord:
    return VersionRecord(
        version=version,
        content_hash=content,
        metadata_hash=metadata,
        chunk_ids=chunk_ids,
        deleted=deleted,
        updated_at=datetime(2026, 1, 2, tzinfo=UTC),
    )


LIVE = record()
TOMBSTONE = record(chunk_ids=(), deleted=True, content="", metadata="")


@dataclass(frozen=True)
class Case:
    source: Expected | str | None
    record: VersionRecord | None
    stored: frozenset[str]
    verdict: Verdict
    reason: str
    """A fragment of the reason, telling this case's rule from its neighbours'."""


def rows(*ids: str) -> frozenset[str]:
    return frozenset(ids)


CASES = {
    # A record from the future blocks every later change: it comes first.
    "future-record-in-sync-otherwise": Case(
        SOURCE, record(version=FUTURE), rows(*IDS), "version_mismatch", "after the cluster's time"
    ),
    "future-record-before-orphan": Case(
        None, record(version=FUTURE), rows(*IDS), "version_mismatch", "after the cluster's time"
    ),
    "future-record-before-missing-rows": Case(
        SOURCE, record(version=FUTURE), rows(), "version_mismatch", "after the cluster's time"
    ),
    "record-at-now-is-not-future": Case(
        SOURCE, record(version=NOW), rows(*IDS), "in_sync", "current text"
    ),
    "future-tombstone-is-not-judged-by-version": Case(
        None, record(version=FUTURE, deleted=True, chunk_ids=()), rows(), "absent", "nothing"
    ),
    # The source does not want it indexed.
    "no-source-with-rows": Case(None, None, rows("c9"), "orphan", "Milvus holds 1 rows"),
    "filtered-with-rows": Case(FILTERED, LIVE, rows(*IDS), "orphan", "CDC_FILTER"),
    "no-source-rows-win-over-live-record": Case(
        None, LIVE, rows(*IDS), "orphan", "Milvus holds 2 rows"
    ),
    "no-source-live-record-without-rows": Case(
        None, LIVE, rows(), "orphan", "its version record says it is indexed"
    ),
    "filtered-live-record-without-rows": Case(FILTERED, LIVE, rows(), "orphan", "CDC_FILTER"),
    "no-source-nothing": Case(None, None, rows(), "absent", "the source does not hold it"),
    "no-source-tombstone": Case(None, TOMBSTONE, rows(), "absent", "holds nothing"),
    "filtered-nothing": Case(FILTERED, None, rows(), "absent", "CDC_FILTER"),
    "no-source-tombstone-with-rows": Case(None, TOMBSTONE, rows("c0"), "orphan", "1 rows"),
    # The source wants it indexed, and no live record says it is.
    "no-record-with-rows": Case(
        SOURCE, None, rows(*IDS), "version_mismatch", "no version record lists them"
    ),
    "tombstone-with-rows": Case(
        SOURCE, TOMBSTONE, rows("c0"), "version_mismatch", "no version record lists them"
    ),
    "no-record-no-rows": Case(SOURCE, None, rows(), "missing", "the index holds nothing"),
    "tombstone-no-rows": Case(SOURCE, TOMBSTONE, rows(), "missing", "the index holds nothing"),
    # A live record: its rows, then its hashes, then rows it does not list.
    "lost-row": Case(SOURCE, LIVE, rows("c0"), "missing", "1 of the 2 rows"),
    "all-rows-lost": Case(SOURCE, LIVE, rows(), "missing", "2 of the 2 rows"),
    "lost-row-before-stale-text": Case(
        SOURCE, record(content="text-v1"), rows("c1"), "missing", "1 of the 2 rows"
    ),
    "lost-row-despite-extra-rows": Case(
        SOURCE, LIVE, rows("c0", "c7"), "missing", "1 of the 2 rows"
    ),
    "stale-text": Case(SOURCE, record(content="text-v1"), rows(*IDS), "stale", "its text"),
    "stale-text-before-extra-rows": Case(
        SOURCE, record(content="text-v1"), rows(*IDS, "c7"), "stale", "its text"
    ),
    "stale-metadata": Case(
        SOURCE, record(metadata="meta-v1"), rows(*IDS), "stale", "its indexed metadata"
    ),
    "stale-metadata-before-extra-rows": Case(
        SOURCE, record(metadata="meta-v1"), rows(*IDS, "c7"), "stale", "its indexed metadata"
    ),
    "stale-text-reported-before-metadata": Case(
        SOURCE, record(content="text-v1", metadata="meta-v1"), rows(*IDS), "stale", "its text"
    ),
    "extra-rows": Case(
        SOURCE, LIVE, rows(*IDS, "c7", "c8"), "version_mismatch", "2 rows of it that its"
    ),
    "in-sync": Case(SOURCE, LIVE, rows(*IDS), "in_sync", "current text and metadata"),
    "in-sync-without-chunks": Case(SOURCE, record(chunk_ids=()), rows(), "in_sync", "current"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_judge(case: Case) -> None:
    finding = judge(case.source, case.record, case.stored, now=NOW)

    assert finding.verdict == case.verdict, finding.reason
    assert case.reason in finding.reason


def test_every_verdict_is_covered() -> None:
    verdicts = {case.verdict for case in CASES.values()}

    assert verdicts == {"in_sync", "absent", "missing", "stale", "orphan", "version_mismatch"}


def test_judge_accepts_any_collection_of_row_ids() -> None:
    listed = judge(SOURCE, LIVE, ["c1", "c0"], now=NOW)
    extra = judge(SOURCE, LIVE, ("c0", "c1", "c2"), now=NOW)

    assert (listed.verdict, extra.verdict) == ("in_sync", "version_mismatch")


def test_the_future_reason_names_both_times() -> None:
    finding = judge(SOURCE, record(version=FUTURE), rows(*IDS), now=NOW)

    assert "2025-11-24T16:01:40+00:00" in finding.reason  # 1_764_000_100 s
    assert "2025-11-24T16:00:00+00:00" in finding.reason  # 1_764_000_000 s


# expected(): what the source requires, as the indexer would record it.

FINGERPRINT = "hash-embedder-v1:8:fp32|chars:200:20"


@pytest.fixture
def view(tmp_path: Path, redis_client: aioredis.Redis, pipeline_name: str) -> IndexView:
    """A view over the mapping and fingerprint (expected() touches neither store)."""
    mapper = ChangeMapper(
        IndexedText(["title", "body"]),
        MetadataFields(["lang"]),
        UserField(None),
        {"lang": {"$in": ["en", "fr"]}},
    )
    store = VectorStore(
        str(tmp_path / "unused.db"),
        "chunks",
        dimension=8,
        fingerprint=FINGERPRINT,
        metadata_fields=["lang"],
    )
    versions = VersionStore(redis_client, Keys(pipeline_name), ttl_seconds=None)
    return IndexView(store=store, versions=versions, mapper=mapper, fingerprint=FINGERPRINT)


def indexed_as(view: IndexView, document: dict[str, Any]) -> tuple[str, str]:
    """The content and metadata hashes the indexer records for *document*."""
    origin = ChangeOrigin(
        event_id="e1",
        document_id="1",
        namespace="app.articles",
        version=EARLIER,
        timestamp=datetime(2026, 1, 2, tzinfo=UTC),
    )
    plan = plan_document(
        view.mapper.created(document, origin),
        None,
        chunker=lambda text: [text],
        pipeline_fingerprint=FINGERPRINT,
        version_guard=True,
    )
    return plan.content_hash, plan.metadata_hash


def test_expected_matches_what_the_indexer_records(view: IndexView) -> None:
    document = {"_id": 1, "title": "Moon", "body": "床前明月光", "lang": "en"}

    found = expected(view, document)

    assert isinstance(found, Expected)
    assert (found.content_hash, found.metadata_hash) == indexed_as(view, document)
    assert found.text_chars == len("Moon\n\n床前明月光")


def test_expected_tells_text_from_metadata(view: IndexView) -> None:
    base = expected(view, {"_id": 1, "title": "Moon", "lang": "en"})
    retitled = expected(view, {"_id": 1, "title": "Sun", "lang": "en"})
    relabelled = expected(view, {"_id": 1, "title": "Moon", "lang": "fr"})

    assert isinstance(base, Expected)
    assert isinstance(retitled, Expected)
    assert isinstance(relabelled, Expected)
    assert retitled.content_hash != base.content_hash
    assert retitled.metadata_hash == base.metadata_hash
    assert relabelled.content_hash == base.content_hash
    assert relabelled.metadata_hash != base.metadata_hash


def test_expected_content_hash_depends_on_the_fingerprint(view: IndexView) -> None:
    document = {"_id": 1, "title": "Moon", "lang": "en"}
    other = replace(view, fingerprint="another-model|chars:200:20")

    first, second = expected(view, document), expected(other, document)

    assert isinstance(first, Expected)
    assert isinstance(second, Expected)
    assert first.content_hash != second.content_hash


def test_expected_names_the_filter_for_an_excluded_document(view: IndexView) -> None:
    assert expected(view, {"_id": 1, "title": "Moon", "lang": "de"}) == FILTERED


def test_expected_says_why_a_document_cannot_be_indexed(view: IndexView) -> None:
    found = expected(view, {"_id": 1, "title": True, "lang": "en"})

    assert found == "it cannot be indexed: text field 'title' holds a bool, not text"


def test_a_document_expected_nothing_of_is_judged_as_such(view: IndexView) -> None:
    why = expected(view, {"_id": 1, "title": "Moon", "lang": "de"})

    finding = judge(why, LIVE, rows(*IDS), now=NOW)

    assert finding.verdict == "orphan"
    assert finding.reason.startswith(FILTERED)
