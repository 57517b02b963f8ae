"""The mixed workload of bench_peer.py: which documents change, how, and what the source
holds after each change.

Most changes in a real collection touch metadata (a counter, a status), a few edit a
paragraph, a few delete a document. The workload is drawn once from a seed, so the
sidecar and the peer are fed exactly the same changes in the same order."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

Doc = dict[str, Any]
Kind = Literal["insert", "metadata", "edit", "delete"]

CHANGING_FIELD = "views"
"""The field a metadata-only change sets: indexed as metadata in one phase, not in the other."""

SHARES: tuple[tuple[Kind, float], ...] = (("metadata", 0.80), ("edit", 0.15), ("delete", 0.05))


@dataclass(frozen=True)
class Change:
    """One write to the source: *update* is the MongoDB ``$set`` (None for an insert or a
    delete) and *document* the whole document after it (None once deleted)."""

    kind: Kind
    id: str
    update: Doc | None
    document: Doc | None


def draw_changes(docs: list[Doc], count: int, seed: int) -> list[Change]:
    """*count* changes to *docs* (not modified), in the shares of SHARES, in random order.

    A deleted document is never changed again; an edit appends a sentence to one
    paragraph of ``content``. Raises ValueError when the deletes would empty the
    collection."""
    rng = random.Random(seed)
    kinds: list[Kind] = []
    for kind, share in SHARES[1:]:
        kinds += [kind] * round(count * share)
    kinds = [SHARES[0][0]] * (count - len(kinds)) + kinds
    rng.shuffle(kinds)
    if kinds.count("delete") >= len(docs):
        raise ValueError(f"{kinds.count('delete')} deletes would empty {len(docs)} documents")
    live = {doc["_id"]: dict(doc) for doc in docs}
    changes = []
    for number, kind in enumerate(kinds):
        doc_id = rng.choice(sorted(live))
        doc = live[doc_id]
        if kind == "delete":
            del live[doc_id]
            changes.append(Change(kind, doc_id, None, None))
            continue
        if kind == "metadata":
            update = {CHANGING_FIELD: doc.get(CHANGING_FIELD, 0) + 1}
        else:
            paragraphs = doc["content"].split("\n\n")
            at = rng.randrange(len(paragraphs))
            paragraphs[at] += f" Revised by change {number}."
            update = {"content": "\n\n".join(paragraphs)}
        doc.update(update)
        changes.append(Change(kind, doc_id, update, dict(doc)))
    return changes


def final_documents(docs: list[Doc], changes: list[Change]) -> dict[str, Doc]:
    """What the source holds after *changes*, by ``_id``."""
    state = {doc["_id"]: doc for doc in docs}
    for change in changes:
        if change.document is None:
            state.pop(change.id, None)
        else:
            state[change.id] = change.document
    return state
