"""The planning rules: what a change does to a document's chunks (invariants 2 and 3)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from checkpoints.versions import VersionRecord
from core.events import DocumentCreatedEvent, DocumentDeletedEvent, DocumentUpdatedEvent
from indexer.plan import (
    DocumentPlan,
    chunk_id,
    leftover_ids,
    metadata_hash,
    plan_document,
    rewrite_overwritten,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def paragraphs(text: str) -> list[str]:
    return [part for part in text.split("\n\n") if part]


def updated(
    text: str, version: int, metadata: dict[str, object] | None = None
) -> DocumentUpdatedEvent:
    return DocumentUpdatedEvent(
        event_id=f"e{version}",
        document_id="d1",
        namespace="app.docs",
        version=version,
        timestamp=NOW,
        content=text,
        metadata=metadata or {},
    )


def plan(event: object, record: VersionRecord | None) -> DocumentPlan:
    return plan_document(
        event,  # type: ignore[arg-type]
        record,
        chunker=paragraphs,
        pipeline_fingerprint="model|chunker",
        version_guard=True,
    )


def applied(result: DocumentPlan) -> VersionRecord:
    """The record the updater writes after carrying out *result*."""
    return VersionRecord(
        version=result.event.version,
        content_hash=result.content_hash,
        metadata_hash=result.metadata_hash,
        chunk_ids=tuple(c.id for c in result.chunks),
        deleted=result.decision == "delete",
        updated_at=NOW,
    )


def test_new_document_embeds_every_chunk() -> None:
    result = plan(updated("a\n\nb\n\nc", 1), None)
    assert result.decision == "reindex"
    assert [c.action for c in result.chunks] == ["embed", "embed", "embed"]
    assert [c.text for c in result.chunks] == ["a", "b", "c"]
    assert result.stale_ids == ()


def test_unchanged_text_and_metadata_does_nothing() -> None:
    first = plan(updated("a\n\nb", 1, {"tag": "x"}), None)
    again = plan(updated("a\n\nb", 2, {"tag": "x"}), applied(first))
    assert again.decision == "unchanged"
    assert again.with_action("embed") == [] and again.with_action("rewrite") == []
    assert again.stale_ids == ()


def test_metadata_change_rewrites_without_embedding() -> None:
    first = plan(updated("a\n\nb", 1, {"tag": "x"}), None)
    again = plan(updated("a\n\nb", 2, {"tag": "y"}), applied(first))
    assert again.decision == "metadata"
    assert again.with_action("embed") == []
    assert [c.id for c in again.with_action("rewrite")] == [c.id for c in first.chunks]


def test_one_paragraph_edit_embeds_only_that_paragraph() -> None:
    first = plan(updated("a\n\nb\n\nc", 1), None)
    again = plan(updated("a\n\nB!\n\nc", 2), applied(first))
    assert [c.text for c in again.with_action("embed")] == ["B!"]
    assert [c.action for c in again.chunks] == ["keep", "embed", "keep"]
    assert again.stale_ids == (first.chunks[1].id,)


def test_inserted_paragraph_moves_later_chunks_without_embedding_them() -> None:
    first = plan(updated("a\n\nb", 1), None)
    again = plan(updated("new\n\na\n\nb", 2), applied(first))
    assert [c.action for c in again.chunks] == ["embed", "rewrite", "rewrite"]
    assert again.stale_ids == ()


def test_shrinking_document_deletes_its_stale_chunks() -> None:
    first = plan(updated("a\n\nb\n\nc\n\nd", 1), None)
    again = plan(updated("a", 2), applied(first))
    assert set(again.stale_ids) == {c.id for c in first.chunks[1:]}


def test_delete_removes_every_chunk_and_tombstone_stops_older_changes() -> None:
    first = plan(updated("a\n\nb", 5), None)
    gone = plan(
        DocumentDeletedEvent(
            event_id="x", document_id="d1", namespace="app.docs", version=6, timestamp=NOW
        ),
        applied(first),
    )
    assert gone.decision == "delete"
    assert set(gone.stale_ids) == {c.id for c in first.chunks}
    replayed = plan(updated("a\n\nb", 5), applied(gone))
    assert replayed.decision == "stale"


def test_older_change_never_overwrites_newer() -> None:
    newer = plan(updated("new text", 10), None)
    older = plan(updated("old text", 9), applied(newer))
    assert older.decision == "stale"


def test_a_change_at_exactly_the_indexed_version_is_not_stale() -> None:
    indexed = plan(updated("a\n\nb", 10), None)
    again = plan(updated("a\n\nc", 10), applied(indexed))
    assert again.decision == "reindex"
    assert [c.action for c in again.chunks] == ["keep", "embed"]


def test_created_after_delete_embeds_again() -> None:
    first = plan(updated("a", 1), None)
    gone = plan(
        DocumentDeletedEvent(
            event_id="x", document_id="d1", namespace="app.docs", version=2, timestamp=NOW
        ),
        applied(first),
    )
    back = plan(
        DocumentCreatedEvent(
            event_id="y",
            document_id="d1",
            namespace="app.docs",
            version=3,
            timestamp=NOW,
            content="a",
            source="app.docs",
        ),
        applied(gone),
    )
    assert back.decision == "reindex"
    assert [c.action for c in back.chunks] == ["embed"]


def test_repeated_paragraphs_get_distinct_ids() -> None:
    result = plan(updated("same\n\nsame", 1), None)
    assert len({c.id for c in result.chunks}) == 2
    assert chunk_id("k", "same", 0) != chunk_id("k", "same", 1)


def test_pipeline_change_reembeds_everything() -> None:
    first = plan(updated("a\n\nb", 1), None)
    other = plan_document(
        updated("a\n\nb", 2),
        applied(first),
        chunker=paragraphs,
        pipeline_fingerprint="other-model|chunker",
        version_guard=True,
    )
    assert other.decision == "reindex"


texts = st.lists(
    st.sampled_from(["alpha", "beta", "gamma", "delta", "数据", "向量"]), min_size=0, max_size=8
).map("\n\n".join)


@given(st.lists(texts, min_size=1, max_size=6))
def test_any_sequence_of_edits_ends_with_exactly_the_last_texts_chunks(history: list[str]) -> None:
    """Applying plans in order keeps the index (a set of chunk ids) equal to the
    last text's chunks: nothing stale survives, nothing needed is missing."""
    index: set[str] = set()
    record: VersionRecord | None = None
    for version, text in enumerate(history, start=1):
        result = plan(updated(text, version), record)
        index |= {c.id for c in result.with_action("embed")}
        index -= set(result.stale_ids)
        record = applied(result)
    expected = plan(updated(history[-1], 99), None)
    assert index == {c.id for c in expected.chunks}


def deleted(version: int) -> DocumentDeletedEvent:
    return DocumentDeletedEvent(
        event_id=f"d{version}",
        document_id="d1",
        namespace="app.docs",
        version=version,
        timestamp=NOW,
    )


def test_chunk_ids_are_32_hex_digits_and_number_repeated_texts_by_occurrence() -> None:
    result = plan(updated("same\n\nsame\n\nsame", 1), None)
    key = result.event.key
    assert [c.id for c in result.chunks] == [chunk_id(key, "same", n) for n in range(3)]
    assert all(len(c.id) == 32 and int(c.id, 16) >= 0 for c in result.chunks)


def test_metadata_hash_is_the_one_version_records_already_hold() -> None:
    # Stored in every version record: a different hash of the same metadata (say,
    # JSON with escaped non-ASCII) would rewrite every such document after an upgrade.
    assert metadata_hash({"lang": "中文", "tags": ["é"]}) == (
        "3e09c64bf9de014319ef3761c38de9bdab48098bda3238b8912c18d7b6f09228"
    )


def test_metadata_hash_ignores_key_order_and_takes_any_bson_value() -> None:
    assert metadata_hash({"a": 1, "b": 2}) == metadata_hash({"b": 2, "a": 1})
    when = {"updated": datetime(2026, 1, 1, tzinfo=UTC)}
    assert metadata_hash(when) != metadata_hash({"updated": "another day"})


def test_a_metadata_only_change_records_the_new_hashes() -> None:
    first = plan(updated("a\n\nb", 1, {"lang": "en"}), None)
    again = plan(updated("a\n\nb", 2, {"lang": "fr"}), applied(first))
    assert again.decision == "metadata"
    assert again.content_hash == first.content_hash
    assert again.metadata_hash == metadata_hash({"lang": "fr"}) != first.metadata_hash


def test_leftovers_count_every_delivery_after_a_delete_in_the_batch() -> None:
    record = applied(plan(updated("a", 1), None))
    attempted, winner = updated("a\n\nx", 3), updated("a\n\ny", 4)
    result = plan(winner, record)
    left = leftover_ids([deleted(2), attempted, winner], result, record, chunker=paragraphs)
    assert left == (chunk_id(winner.key, "x", 0),)


def test_leftovers_count_deliveries_queued_after_the_winner() -> None:
    record = applied(plan(updated("a", 1), None))
    winner, attempted = updated("a\n\ny", 4), updated("a\n\nx", 3)  # delivered out of order
    result = plan(winner, record)
    left = leftover_ids([winner, attempted], result, record, chunker=paragraphs)
    assert left == (chunk_id(winner.key, "x", 0),)


def test_only_the_rows_another_delivery_overwrote_are_rewritten() -> None:
    record = applied(plan(updated("a\n\nb", 1, {"lang": "en"}), None))
    winner = updated("a\n\nb\n\nc", 3, {"lang": "en"})
    result = plan(winner, record)
    assert [c.action for c in result.chunks] == ["keep", "keep", "embed"]

    # A delivery that moved "b" to the front, and one with other metadata for "a".
    moved = updated("b", 2, {"lang": "en"})
    checked = rewrite_overwritten(result, [winner, moved], chunker=paragraphs)
    assert [c.action for c in checked.chunks] == ["keep", "rewrite", "embed"]
    relabelled = updated("a", 2, {"lang": "fr"})
    checked = rewrite_overwritten(result, [winner, relabelled], chunker=paragraphs)
    assert [c.action for c in checked.chunks] == ["rewrite", "keep", "embed"]
    checked = rewrite_overwritten(result, [winner, deleted(2), moved], chunker=paragraphs)
    assert [c.action for c in checked.chunks] == ["keep", "rewrite", "embed"]


def test_rows_another_delivery_wrote_the_same_way_are_kept() -> None:
    record = applied(plan(updated("a\n\nb", 1, {"lang": "en"}), None))
    winner = updated("a\n\nb\n\nc", 3, {"lang": "en"})
    earlier = updated("a\n\nb", 2, {"lang": "en"})  # same chunks, places and metadata
    checked = rewrite_overwritten(plan(winner, record), [earlier, winner], chunker=paragraphs)
    assert [c.action for c in checked.chunks] == ["keep", "keep", "embed"]
