"""Change events as the server shapes them, derived from oplog entries.

One entry yields zero, one or two events for a given stream: a drop seen by
a collection stream, for instance, is a ``drop`` followed by ``invalidate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mongosim.errors import CommandError
from mongosim.oplog import INVALIDATE, OplogEntry, ResumeToken
from mongosim.storage import INTERNAL_DATABASES, Storage

DATA_OPS = frozenset({"insert", "update", "replace", "delete"})
FULL_DOCUMENT_MODES = frozenset({"default", "updateLookup", "whenAvailable", "required"})
BEFORE_CHANGE_MODES = frozenset({"off", "whenAvailable", "required"})


@dataclass(frozen=True, slots=True)
class Scope:
    """What a stream watches: a collection, a database (coll None) or the cluster (db None)."""

    db: str | None
    coll: str | None

    def covers(self, db: str, coll: str | None) -> bool:
        """Whether a write to *db.coll* is visible in this stream."""
        if self.db is None:
            return db not in INTERNAL_DATABASES and not (coll or "").startswith("system.")
        if db != self.db:
            return False
        if self.coll is None:
            return not (coll or "").startswith("system.")
        return coll == self.coll


@dataclass(frozen=True, slots=True)
class ImageModes:
    """The stream's ``fullDocument`` and ``fullDocumentBeforeChange`` settings."""

    full_document: str = "default"
    before_change: str = "off"


class EventFactory:
    """Builds the events one oplog entry produces for one stream."""

    def __init__(self, storage: Storage, scope: Scope, modes: ImageModes) -> None:
        self._storage = storage
        self._scope = scope
        self._modes = modes

    def events(self, entry: OplogEntry) -> list[dict[str, Any]]:
        """The events *entry* produces for this stream, in order.

        Raises CommandError 47 NoMatchingDocument when the stream requires a
        pre- or post-image the entry does not have.
        """
        scope = self._scope
        if entry.op in DATA_OPS:
            if not scope.covers(entry.db, entry.coll):
                return []
            return [self._data_event(entry)]
        if entry.op == "drop":
            if not scope.covers(entry.db, entry.coll):
                return []
            return self._with_invalidate(
                entry, self._ns_event(entry, "drop"), scope.coll is not None
            )
        if entry.op == "rename" and entry.to is not None:
            # As the server's filter: a rename is seen by the streams watching
            # its source and by those watching its target ("o.to"), and it
            # invalidates a collection stream on either.
            if not (scope.covers(entry.db, entry.coll) or scope.covers(*entry.to)):
                return []
            event = self._ns_event(entry, "rename")
            event["to"] = {"db": entry.to[0], "coll": entry.to[1]}
            return self._with_invalidate(entry, event, scope.coll is not None)
        if entry.op == "dropDatabase":
            if scope.db is None and entry.db not in INTERNAL_DATABASES:
                return [self._base(entry, "dropDatabase") | {"ns": {"db": entry.db}}]
            if scope.db == entry.db and scope.coll is None:
                event = self._base(entry, "dropDatabase") | {"ns": {"db": entry.db}}
                return self._with_invalidate(entry, event, True)
        return []

    @staticmethod
    def _base(entry: OplogEntry, op: str) -> dict[str, Any]:
        return {
            "_id": entry.token.document(),
            "operationType": op,
            "clusterTime": entry.ts,
            "wallTime": entry.wall,
        }

    def _ns_event(self, entry: OplogEntry, op: str) -> dict[str, Any]:
        return self._base(entry, op) | {"ns": {"db": entry.db, "coll": entry.coll}}

    def _with_invalidate(
        self, entry: OplogEntry, event: dict[str, Any], invalidates: bool
    ) -> list[dict[str, Any]]:
        if not invalidates:
            return [event]
        token = ResumeToken(entry.ts, entry.seq, INVALIDATE)
        invalidate = {
            "_id": token.document(),
            "operationType": "invalidate",
            "clusterTime": entry.ts,
            "wallTime": entry.wall,
        }
        return [event, invalidate]

    def _data_event(self, entry: OplogEntry) -> dict[str, Any]:
        event = self._base(entry, entry.op)
        full_document = self._full_document(entry)
        if full_document is not _ABSENT:
            event["fullDocument"] = full_document
        event["ns"] = {"db": entry.db, "coll": entry.coll}
        event["documentKey"] = entry.document_key
        if entry.op == "update":
            event["updateDescription"] = entry.update_description
        if entry.op != "insert" and self._modes.before_change != "off":
            if entry.pre_image is None and self._modes.before_change == "required":
                raise _missing_image("pre-image", entry)
            event["fullDocumentBeforeChange"] = entry.pre_image
        return event

    def _full_document(self, entry: OplogEntry) -> Any:
        if entry.op in ("insert", "replace"):
            return entry.document
        if entry.op == "delete":
            return _ABSENT
        mode = self._modes.full_document
        if mode == "updateLookup":
            if entry.coll is None or entry.document_key is None:
                return None
            return self._storage.collection(entry.db, entry.coll).find_one(entry.document_key)
        if mode in ("whenAvailable", "required"):
            if entry.post_image is None and mode == "required":
                raise _missing_image("post-image", entry)
            return entry.post_image
        return _ABSENT


_ABSENT: Any = object()


def _missing_image(kind: str, entry: OplogEntry) -> CommandError:
    return CommandError(
        47,
        f"Change stream was configured to require a {kind} for all update, delete and "
        f"replace events, but the {kind} was not found for event: "
        f"{entry.token.document()}",
    )
