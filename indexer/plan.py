"""Deciding what one document's change means for the index, without doing any I/O.

Given the newest event for a document and what is indexed for it now (its
version record), a DocumentPlan says which chunks to embed, which indexed rows
to keep or rewrite and which to delete. Keeping this pure makes the rules of
invariants 2 and 3 testable on their own."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from checkpoints.versions import VersionRecord
from core.events import DocumentDeletedEvent, DocumentEvent

Decision = Literal["stale", "unchanged", "metadata", "reindex", "delete"]


def chunk_id(doc_key: str, text: str, occurrence: int) -> str:
    """A chunk's primary key: the same text at the same place keeps its id (and its vector)."""
    digest = hashlib.sha256(f"{doc_key}\x00{occurrence}\x00{text}".encode()).hexdigest()
    return digest[:32]


def pipeline_fingerprint(embedder: str, chunker: str) -> str:
    """What content hashes are built on: the embedder's and the chunker's identity, so
    that a change of either makes every document's chunks planned again."""
    return f"{embedder}|{chunker}"


def content_hash(text: str, pipeline_fingerprint: str) -> str:
    return hashlib.sha256(f"{pipeline_fingerprint}\x00{text}".encode()).hexdigest()


def metadata_hash(metadata: Mapping[str, Any]) -> str:
    body = json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


ChunkAction = Literal["embed", "rewrite", "keep"]


@dataclass(frozen=True)
class PlannedChunk:
    """One chunk of the document's new state.

    embed: a text the document does not have indexed yet; rewrite: already
    indexed under this id, but its position or metadata changed, so the row is
    rewritten with its stored vector; keep: indexed exactly as it should be."""

    id: str
    index: int
    text: str
    action: ChunkAction


@dataclass(frozen=True)
class DocumentPlan:
    event: DocumentEvent
    decision: Decision
    content_hash: str = ""
    metadata_hash: str = ""
    chunks: tuple[PlannedChunk, ...] = ()
    stale_ids: tuple[str, ...] = field(default=())

    def with_action(self, action: ChunkAction) -> list[PlannedChunk]:
        return [chunk for chunk in self.chunks if chunk.action == action]


def plan_document(
    event: DocumentEvent,
    record: VersionRecord | None,
    *,
    chunker: Callable[[str], Sequence[str]],
    pipeline_fingerprint: str,
    version_guard: bool,
) -> DocumentPlan:
    """Decide what *event* does to the index, given what *record* says is indexed.

    An event older than the record is stale and does nothing (version guard);
    a delete removes every recorded chunk; unchanged text and metadata do
    nothing; unchanged text with new metadata rewrites rows without embedding;
    otherwise only chunk texts the document does not already have are embedded
    and the chunks that are no longer part of it are deleted."""
    if version_guard and record is not None and event.version < record.version:
        return DocumentPlan(event, "stale")
    indexed = () if record is None or record.deleted else record.chunk_ids
    if isinstance(event, DocumentDeletedEvent):
        return DocumentPlan(event, "delete", stale_ids=tuple(indexed))
    text: str = getattr(event, "content", "")
    new_content = content_hash(text, pipeline_fingerprint)
    new_metadata = metadata_hash(event.metadata)
    if indexed and record is not None and record.content_hash == new_content:
        same = record.metadata_hash == new_metadata
        action: ChunkAction = "keep" if same else "rewrite"
        chunks = tuple(
            PlannedChunk(id=cid, index=i, text="", action=action) for i, cid in enumerate(indexed)
        )
        return DocumentPlan(
            event, "unchanged" if same else "metadata", new_content, new_metadata, chunks
        )
    metadata_same = record is not None and record.metadata_hash == new_metadata
    position = {cid: i for i, cid in reversed(list(enumerate(indexed)))}
    planned = []
    for index, (cid, piece) in enumerate(identified(event.key, chunker(text))):
        if cid not in position:
            action = "embed"
        elif position[cid] == index and metadata_same:
            action = "keep"
        else:
            action = "rewrite"
        planned.append(PlannedChunk(id=cid, index=index, text=piece, action=action))
    keep = {chunk.id for chunk in planned}
    stale = tuple(cid for cid in indexed if cid not in keep)
    return DocumentPlan(event, "reindex", new_content, new_metadata, tuple(planned), stale)


def leftover_ids(
    events: Sequence[DocumentEvent],
    plan: DocumentPlan,
    record: VersionRecord | None,
    *,
    chunker: Callable[[str], Sequence[str]],
) -> tuple[str, ...]:
    """Chunk ids that *events* (one document's deliveries in a batch, *plan* being
    the plan of the one that wins) would have written, and that the state after
    *plan* does not name: to be deleted with the stale ones.

    An event is delivered again only if it was never acknowledged, and an
    earlier attempt may have upserted its chunks before dying. If a newer event
    of the document now wins (in this batch, or in the record), no version
    record ever named those chunks, so nothing else would ever delete them."""
    if plan.decision == "delete":
        final: set[str] = set()
    elif plan.decision == "stale":
        final = set(() if record is None or record.deleted else record.chunk_ids)
    else:
        final = {chunk.id for chunk in plan.chunks}
    leftover: dict[str, None] = {}
    for event in events:
        if isinstance(event, DocumentDeletedEvent):
            continue
        if event is plan.event and plan.decision != "stale":
            # The winner's own chunks are the applied state: chunking it again
            # would double the tokenizer's work on every batch for nothing.
            continue
        for cid, _ in identified(event.key, chunker(getattr(event, "content", ""))):
            if cid not in final:
                leftover[cid] = None
    return tuple(leftover)


def rewrite_overwritten(
    plan: DocumentPlan,
    events: Sequence[DocumentEvent],
    *,
    chunker: Callable[[str], Sequence[str]],
) -> DocumentPlan:
    """*plan* with each chunk it would keep as stored turned into a rewrite when
    another of *events* (one document's deliveries in a batch) would have
    written that chunk's row at another position or with other metadata.

    Such an event may have done so in an earlier attempt that died before its
    commit; the row would then no longer be what *plan* believes it keeps."""
    kept = {chunk.id: chunk.index for chunk in plan.with_action("keep")}
    if not kept:
        return plan
    suspect: set[str] = set()
    for event in events:
        if event is plan.event or isinstance(event, DocumentDeletedEvent):
            continue
        other_metadata = metadata_hash(event.metadata) != plan.metadata_hash
        pieces = chunker(getattr(event, "content", ""))
        for index, (cid, _) in enumerate(identified(event.key, pieces)):
            if cid in kept and (other_metadata or kept[cid] != index):
                suspect.add(cid)
    if not suspect:
        return plan
    chunks = tuple(
        replace(chunk, action="rewrite") if chunk.id in suspect else chunk for chunk in plan.chunks
    )
    return replace(plan, chunks=chunks)


def identified(doc_key: str, pieces: Sequence[str]) -> list[tuple[str, str]]:
    """Each piece with its chunk id, repeated texts numbered by occurrence."""
    seen: Counter[str] = Counter()
    ids = []
    for piece in pieces:
        ids.append((chunk_id(doc_key, piece, seen[piece]), piece))
        seen[piece] += 1
    return ids
