"""From a MongoDB change document (as pymongo returns it) to a domain event.

Identity and order come from the change itself, so replaying a change gives
the same event: ``event_id`` is the resume token's ``_data`` (an operator
can resume right after any queued event with it), ``version`` is the
change's clusterTime packed as ``(time << 32) | inc``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from bson import json_util
from bson.timestamp import Timestamp

from cdc.fields import TRUNCATED, IndexedText, MetadataFields, TextLimit, UserField, document_id
from cdc.paths import FieldSet, changed_paths, filter_paths
from cdc.query import Query
from checkpoints.tokens import pack_timestamp
from core.errors import DocumentRejected
from core.events import (
    DocumentCreatedEvent,
    DocumentDeletedEvent,
    DocumentEvent,
    DocumentUpdatedEvent,
)

_NO_OFFSET = timedelta(0)
DOCUMENT_OPERATIONS = frozenset({"insert", "update", "replace", "delete"})


@dataclass(frozen=True)
class CollectionChange:
    """A change that is not about one document: drop, rename, dropDatabase,
    invalidate (or any operation type this mapper does not know).

    After ``invalidate`` the stream is closed and must be reopened with
    ``start_after=token``; ``to`` is the new namespace of a rename."""

    operation_type: str
    namespace: str
    to: str | None
    token: Mapping[str, Any]
    cluster_time: int | None


class ChangeOrigin(NamedTuple):
    """Where an event comes from: its id, its document and its position in the stream.

    A named tuple: one is built for every captured change, four times faster than
    a frozen dataclass."""

    event_id: str
    document_id: str
    namespace: str
    version: int
    timestamp: datetime


class ChangeMapper:
    """Turns change documents into domain events for one pipeline's configuration.

    Call it with a change document: it returns the DocumentEvent, None when
    the change cannot affect the index (an update touching none of the text,
    metadata, user or filter fields, or an insert the filter excludes: the
    caller counts those as filtered), or a CollectionChange for operations on
    whole collections. Raises DocumentRejected when the document's text or
    user field has the wrong type; :meth:`rejected` then gives the event that
    takes the document out of the index. *limit* caps the indexed text of one
    document (cut and marked, or rejected). *priority* is the query of the
    documents whose changes go first (:meth:`urgent`). Raises UnsupportedQuery
    when *filter* or *priority* is not a query the sidecar can evaluate as the
    server would."""

    def __init__(
        self,
        text: IndexedText,
        metadata: MetadataFields,
        user: UserField,
        filter: Mapping[str, Any] | None = None,
        limit: TextLimit | None = None,
        priority: Mapping[str, Any] | None = None,
    ) -> None:
        self._text = text
        self._limit = limit
        self._metadata = metadata
        self._user = user
        self._filter = dict(filter or {})
        self._matches = Query(self._filter)
        self._priority = Query(dict(priority)) if priority else None
        watched = [*text.paths, *metadata.paths, *([user.path] if user.path else [])]
        watched += sorted(filter_paths(self._filter))
        self._document_fields = FieldSet(watched)
        self._projected = FieldSet(watched + sorted(filter_paths(dict(priority or {}))))

    @property
    def filter(self) -> dict[str, Any]:
        """The query a document must match to be indexed (empty: every document)."""
        return dict(self._filter)

    def projection(self) -> list[str] | None:
        """The document fields mapping needs (plus ``_id``), as projection keys,
        or None when it needs the whole document (a path starting with an index)."""
        return self._projected.projection()

    def urgent(self, change: Mapping[str, Any]) -> bool:
        """Whether *change* is about a document the priority query admits (as the
        change shows it: a delete shows none, so it is never urgent)."""
        document = change.get("fullDocument")
        return self._priority is not None and document is not None and self._priority(document)

    def matches(self, document: Mapping[str, Any]) -> bool:
        """Whether *document* passes the pipeline's filter."""
        return self._matches(document)

    def __call__(self, change: Mapping[str, Any]) -> DocumentEvent | CollectionChange | None:
        operation = change["operationType"]
        if operation not in DOCUMENT_OPERATIONS:
            return self._collection_change(change)
        if not self.relevant(change):
            return None
        origin = origin_of(change)
        if operation == "delete":
            return DocumentDeletedEvent(**_fields(origin))
        document = change.get("fullDocument")
        if document is None:
            # updateLookup found nothing: the document was deleted after this change.
            return DocumentDeletedEvent(**_fields(origin), metadata={"reason": "deleted_since"})
        if not self.matches(document):
            if operation == "insert":
                # A new _id was never indexed: there is nothing to take out.
                return None
            return DocumentDeletedEvent(**_fields(origin), metadata={"reason": "filtered_out"})
        if operation == "insert":
            return self.created(document, origin)
        content, metadata = self.content(document)
        return DocumentUpdatedEvent(
            **_fields(origin),
            content=content,
            old_content=self._old_content(change.get("fullDocumentBeforeChange")),
            user_id=self._user(document),
            metadata=metadata,
        )

    def created(self, document: Mapping[str, Any], origin: ChangeOrigin) -> DocumentCreatedEvent:
        """The event that indexes *document* as it is now (an insert or a snapshot scan).

        Raises DocumentRejected as the mapper does."""
        content, metadata = self.content(document)
        return DocumentCreatedEvent(
            **_fields(origin),
            content=content,
            source=origin.namespace,
            user_id=self._user(document),
            metadata=metadata,
        )

    def content(self, document: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The document's indexed text within the limit, and its metadata (marked
        with the full length when the text was cut)."""
        text, metadata = self._text(document), self._metadata(document)
        if self._limit is None:
            return text, metadata
        text, full_length = self._limit.apply(text)
        if full_length is not None:
            metadata[TRUNCATED] = full_length
        return text, metadata

    def rejected(self, origin: ChangeOrigin, error: DocumentRejected) -> DocumentDeletedEvent:
        """The event that takes a document that cannot be indexed out of the index."""
        return DocumentDeletedEvent(
            **_fields(origin), metadata={"reason": "rejected", "error": str(error)}
        )

    def relevant(self, change: Mapping[str, Any]) -> bool:
        """False only for an update whose updateDescription touches none of the
        fields the pipeline reads (text, metadata, user, filter)."""
        description = change.get("updateDescription")
        if change["operationType"] != "update" or description is None:
            return True
        return any(self._document_fields.touched_by(path) for path in changed_paths(description))

    def _old_content(self, before: Mapping[str, Any] | None) -> str | None:
        if before is None:
            return None
        try:
            text = self._text(before)
            return text if self._limit is None else text[: self._limit.max_chars]
        except DocumentRejected:
            # The old text is only a hint for diffing; a pre-image that was
            # never indexable has no old text.
            return None

    @staticmethod
    def _collection_change(change: Mapping[str, Any]) -> CollectionChange:
        to = change.get("to")
        cluster_time = change.get("clusterTime")
        return CollectionChange(
            operation_type=str(change["operationType"]),
            namespace=namespace_of(change.get("ns")),
            to=namespace_of(to) if to else None,
            token=change["_id"],
            cluster_time=pack_timestamp(cluster_time) if cluster_time else None,
        )


def namespace_of(ns: Mapping[str, Any] | None) -> str:
    """ "db.coll" (or "db" for a database-wide change, "" when there is none)."""
    if not ns:
        return ""
    database, collection = ns.get("db"), ns.get("coll")
    if isinstance(database, str) and isinstance(collection, str):
        return f"{database}.{collection}"
    return ".".join(str(ns[part]) for part in ("db", "coll") if ns.get(part) is not None)


def event_id_of(token: Mapping[str, Any]) -> str:
    """The stable id of the change whose resume token is *token*."""
    data = token.get("_data")
    if isinstance(data, str):
        return data
    return json_util.dumps(dict(token), json_options=json_util.CANONICAL_JSON_OPTIONS)


def origin_of(change: Mapping[str, Any]) -> ChangeOrigin:
    """Identity, document and position of a document change."""
    cluster_time: Timestamp = change["clusterTime"]
    wall_time: datetime | None = change.get("wallTime")
    if wall_time is None:
        timestamp = datetime.fromtimestamp(cluster_time.time, UTC)
    elif wall_time.tzinfo is None or wall_time.utcoffset() == _NO_OFFSET:
        # The driver's UTC is a tzinfo of its own: relabelling is exact, and cheaper
        # than converting.
        timestamp = wall_time.replace(tzinfo=UTC)
    else:
        timestamp = wall_time.astimezone(UTC)
    return ChangeOrigin(
        event_id=event_id_of(change["_id"]),
        document_id=document_id(change["documentKey"]["_id"]),
        namespace=namespace_of(change["ns"]),
        version=pack_timestamp(cluster_time),
        timestamp=timestamp,
    )


def _fields(origin: ChangeOrigin) -> dict[str, Any]:
    return {
        "event_id": origin.event_id,
        "document_id": origin.document_id,
        "namespace": origin.namespace,
        "version": origin.version,
        "timestamp": origin.timestamp,
    }
