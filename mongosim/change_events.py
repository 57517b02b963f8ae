"""Change events as the server shapes them, derived from oplog entries.

One entry yields zero, one or two events for a given stream: a drop seen by
a collection stream, for instance, is a ``drop`` followed by ``invalidate``.
With ``showExpandedEvents`` a stream also sees create, createIndexes,
dropIndexes and modify events and views' create and drop, and events carry
``collectionUUID``, ``operationDescription`` and
``updateDescription.disambiguatedPaths``, as in the server's
change_stream_event_transform.cpp. ``nsType``, which servers add to create
events from 8.1 on, is not reported: mongosim is a 7.0 server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mongosim.errors import CommandError, type_mismatch
from mongosim.oplog import INVALIDATE, OplogEntry, ResumeToken
from mongosim.storage import INTERNAL_DATABASES, Storage

DATA_OPS = frozenset({"insert", "update", "replace", "delete"})
# Catalog changes only a stream opened with showExpandedEvents reports.
EXPANDED_OPS = frozenset({"create", "createIndexes", "dropIndexes", "modify"})
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
class StreamModes:
    """The stream's ``fullDocument``, ``fullDocumentBeforeChange`` and
    ``showExpandedEvents`` settings."""

    full_document: str = "default"
    before_change: str = "off"
    expanded: bool = False

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> StreamModes:
        """The modes a ``$changeStream`` stage's *options* ask for.

        Raises CommandError 2 for an unknown mode, 14 for a non-boolean
        showExpandedEvents.
        """
        expanded = options.get("showExpandedEvents", False)
        if not isinstance(expanded, bool):
            raise type_mismatch("$changeStream.showExpandedEvents", "bool")
        modes = cls(
            str(options.get("fullDocument", "default")),
            str(options.get("fullDocumentBeforeChange", "off")),
            expanded,
        )
        if modes.full_document not in FULL_DOCUMENT_MODES:
            raise CommandError(2, f"unknown fullDocument mode: {modes.full_document!r}")
        if modes.before_change not in BEFORE_CHANGE_MODES:
            raise CommandError(2, f"unknown fullDocumentBeforeChange mode: {modes.before_change!r}")
        return modes


class EventFactory:
    """Builds the events one oplog entry produces for one stream."""

    def __init__(self, storage: Storage, scope: Scope, modes: StreamModes) -> None:
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
        if entry.op == "rename":
            return self._rename_events(entry)
        if entry.op == "dropDatabase":
            if scope.db is None and entry.db not in INTERNAL_DATABASES:
                return [self._base(entry, "dropDatabase") | {"ns": {"db": entry.db}}]
            if scope.db == entry.db and scope.coll is None:
                event = self._base(entry, "dropDatabase") | {"ns": {"db": entry.db}}
                return self._with_invalidate(entry, event, True)
            return []
        if entry.ns_type == "view":
            # A view's definition is a document of system.views: its create and
            # drop reach only database and cluster streams with showExpandedEvents.
            if not self._modes.expanded or scope.coll is not None:
                return []
            return [self._catalog_event(entry)] if scope.covers(entry.db, entry.coll) else []
        if entry.op == "drop" or (entry.op in EXPANDED_OPS and self._modes.expanded):
            if not scope.covers(entry.db, entry.coll):
                return []
            invalidates = entry.op == "drop" and scope.coll is not None
            return self._with_invalidate(entry, self._catalog_event(entry), invalidates)
        return []

    def _base(self, entry: OplogEntry, op: str) -> dict[str, Any]:
        event: dict[str, Any] = {
            "_id": entry.token.document(),
            "operationType": op,
            "clusterTime": entry.ts,
        }
        if self._modes.expanded and entry.uuid is not None:
            event["collectionUUID"] = entry.uuid
        event["wallTime"] = entry.wall
        return event

    def _catalog_event(self, entry: OplogEntry) -> dict[str, Any]:
        event = self._base(entry, entry.op) | {"ns": {"db": entry.db, "coll": entry.coll}}
        if self._modes.expanded:
            if entry.description is not None:
                event["operationDescription"] = entry.description
            if entry.before is not None:
                event["stateBeforeChange"] = entry.before
        return event

    def _rename_events(self, entry: OplogEntry) -> list[dict[str, Any]]:
        # As the server's filter: a rename is seen by the streams watching its
        # source and by those watching its target ("o.to"), and it invalidates
        # a collection stream on either.
        if entry.to is None:
            return []
        to_db, to_coll = entry.to
        scope = self._scope
        if not (scope.covers(entry.db, entry.coll) or scope.covers(to_db, to_coll)):
            return []
        event = self._base(entry, "rename") | {"ns": {"db": entry.db, "coll": entry.coll}}
        event["to"] = {"db": to_db, "coll": to_coll}
        if self._modes.expanded:
            description = {"to": {"db": to_db, "coll": to_coll}, **(entry.description or {})}
            event["operationDescription"] = description
        return self._with_invalidate(entry, event, scope.coll is not None)

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
            description = dict(entry.update_description or {})
            if not self._modes.expanded:
                description.pop("disambiguatedPaths", None)
            event["updateDescription"] = description
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
