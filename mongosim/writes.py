"""Document writes (insert, update, delete, findAndModify) that also record the oplog.

Each changed document becomes one oplog entry carrying what change streams
need: the document key, the inserted or replacing document, the update
description, and pre-/post-images when the collection keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from bson.errors import BSONError
from pymongo.errors import DuplicateKeyError, OperationFailure

from mongosim import diff
from mongosim.engine import compatible_stage, results
from mongosim.errors import CommandError
from mongosim.storage import Storage

# mongomock reports a bad update (say $inc on a string) as a plain Python error
# rather than an OperationFailure; these become the statement's write error.
ENGINE_ERRORS = (
    OperationFailure,
    BSONError,
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    IndexError,
    NotImplementedError,
)


@dataclass(slots=True)
class WriteOutcome:
    """What a batch of write statements did, in the shape of the write command reply."""

    n: int = 0
    modified: int = 0
    upserted: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def write_error(index: int, exc: BaseException) -> dict[str, Any]:
    """A writeErrors element for statement *index* failing with *exc*."""
    if isinstance(exc, CommandError):
        return {"index": index, "code": exc.code, "errmsg": exc.message}
    if isinstance(exc, DuplicateKeyError):
        return {"index": index, "code": 11000, "errmsg": f"E11000 duplicate key error: {exc}"}
    if isinstance(exc, OperationFailure):
        return {"index": index, "code": exc.code or 2, "errmsg": str(exc)}
    if isinstance(exc, NotImplementedError):
        return {"index": index, "code": 115, "errmsg": f"not supported by mongosim: {exc}"}
    code = 14 if isinstance(exc, TypeError) else 2
    return {"index": index, "code": code, "errmsg": f"{type(exc).__name__}: {exc}"}


def is_replacement(update: Any) -> bool:
    """Whether *update* is a replacement document rather than operators or a pipeline.

    Raises CommandError 9 for a document that mixes operators and fields.
    """
    if isinstance(update, list):
        return False
    if not isinstance(update, Mapping):
        raise CommandError(14, "update must be a document or a pipeline")
    operators = [key.startswith("$") for key in update]
    if any(operators) and not all(operators):
        raise CommandError(9, "Update document cannot mix operators and fields")
    return not any(operators)


def server_update(update: Any) -> Any:
    """*update* with pipeline stages in the form mongomock evaluates."""
    if isinstance(update, list):
        return [compatible_stage(stage) for stage in update if isinstance(stage, Mapping)]
    return update


class DocumentWriter:
    """Applies write statements to storage and records each change in the oplog."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def insert(
        self, db: str, coll: str, documents: list[dict[str, Any]], ordered: bool
    ) -> WriteOutcome:
        """Insert *documents*, giving each an ObjectId ``_id`` (first) when it has none."""
        collection = self._storage.collection(db, coll)
        if documents:
            self._storage.ensure(db, coll)
        outcome = WriteOutcome()
        for index, document in enumerate(documents):
            if "_id" not in document:
                document = {"_id": ObjectId(), **document}
            try:
                collection.insert_one(document)
            except ENGINE_ERRORS as exc:
                outcome.errors.append(write_error(index, exc))
                if ordered:
                    break
                continue
            outcome.n += 1
            self._storage.record(
                "insert", db, coll, document_key={"_id": document["_id"]}, document=document
            )
        return outcome

    def update(
        self, db: str, coll: str, statements: list[dict[str, Any]], ordered: bool
    ) -> WriteOutcome:
        """Apply update statements ``{q, u, upsert, multi, arrayFilters}``."""
        outcome = WriteOutcome()
        for index, statement in enumerate(statements):
            try:
                matched, modified, upserted_id = self._update_one_statement(db, coll, statement)
            except (CommandError, *ENGINE_ERRORS) as exc:
                outcome.errors.append(write_error(index, exc))
                if ordered:
                    break
                continue
            outcome.n += matched
            outcome.modified += modified
            if upserted_id is not None:
                outcome.n += 1
                outcome.upserted.append({"index": index, "_id": upserted_id})
        return outcome

    def _update_one_statement(
        self, db: str, coll: str, statement: dict[str, Any]
    ) -> tuple[int, int, Any]:
        query = statement.get("q", {})
        update = statement.get("u")
        replacement = is_replacement(update)
        multi = bool(statement.get("multi", False))
        if replacement and multi:
            raise CommandError(9, "multi update is not supported for replacement-style update")
        targets = self.matching_ids(db, coll, query, None, multi)
        if not targets:
            if not statement.get("upsert", False):
                return 0, 0, None
            upserted = self.upsert(db, coll, query, update, statement.get("arrayFilters"))
            return 0, 0, upserted
        modified = 0
        for doc_id in targets:
            if (
                self.apply(db, coll, query, doc_id, update, statement.get("arrayFilters"))
                is not None
            ):
                modified += 1
        return len(targets), modified, None

    def matching_ids(self, db: str, coll: str, query: Any, sort: Any, multi: bool) -> list[Any]:
        """The ``_id`` of each document matching *query*, in *sort* order; one unless *multi*."""
        if not isinstance(query, Mapping):
            raise CommandError(14, "query must be a document")
        cursor = self._storage.collection(db, coll).find(query, {"_id": 1}, sort=sort_spec(sort))
        if not multi:
            cursor = cursor.limit(1)
        return [doc["_id"] for doc in results(cursor)]

    def apply(
        self,
        db: str,
        coll: str,
        query: Mapping[str, Any],
        doc_id: Any,
        update: Any,
        array_filters: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Apply *update* to the document *doc_id* (which matched *query*).

        Returns (before, after), or None if the update changed nothing.
        """
        collection = self._storage.collection(db, coll)
        before = collection.find_one({"_id": doc_id})
        if before is None:
            return None
        # The original query stays in the filter so positional ($) updates
        # resolve against the array element it matched.
        target = (
            {"$and": [dict(query), {"_id": doc_id}]} if "_id" in query else {**query, "_id": doc_id}
        )
        if is_replacement(update):
            replacement = dict(update)
            if "_id" in replacement and replacement["_id"] != doc_id:
                raise CommandError(
                    66,
                    "Performing an update on the path '_id' would modify the immutable field '_id'",
                )
            collection.replace_one(target, {"_id": doc_id, **replacement})
            op = "replace"
        else:
            collection.update_one(target, server_update(update), array_filters=array_filters)
            op = "update"
        after = collection.find_one({"_id": doc_id})
        if after is None:
            return None
        description = diff.update_description(before, after)
        if not any(description.values()) and list(before) == list(after):
            return None
        images = self._storage.images_enabled(db, coll)
        self._storage.record(
            op,
            db,
            coll,
            document_key={"_id": doc_id},
            document=after if op == "replace" else None,
            update_description=description if op == "update" else None,
            pre_image=before if images else None,
            post_image=after if images else None,
        )
        return before, after

    def upsert(self, db: str, coll: str, query: Any, update: Any, array_filters: Any) -> Any:
        """Insert the document an upsert of *update* under *query* creates; returns its _id."""
        collection = self._storage.collection(db, coll)
        self._storage.ensure(db, coll)
        if is_replacement(update):
            result = collection.replace_one(query, dict(update), upsert=True)
        else:
            result = collection.update_one(
                query, server_update(update), upsert=True, array_filters=array_filters
            )
        doc_id = result.upserted_id
        document = collection.find_one({"_id": doc_id})
        self._storage.record("insert", db, coll, document_key={"_id": doc_id}, document=document)
        return doc_id

    def delete(
        self, db: str, coll: str, statements: list[dict[str, Any]], ordered: bool
    ) -> WriteOutcome:
        """Apply delete statements ``{q, limit}`` (limit 1 deletes one, 0 all matches)."""
        outcome = WriteOutcome()
        for index, statement in enumerate(statements):
            try:
                targets = self.matching_ids(
                    db, coll, statement.get("q", {}), None, statement.get("limit", 0) != 1
                )
                for doc_id in targets:
                    self.remove(db, coll, doc_id)
            except (CommandError, *ENGINE_ERRORS) as exc:
                outcome.errors.append(write_error(index, exc))
                if ordered:
                    break
                continue
            outcome.n += len(targets)
        return outcome

    def remove(self, db: str, coll: str, doc_id: Any) -> dict[str, Any] | None:
        """Delete the document *doc_id*; returns it, or None if it was already gone."""
        collection = self._storage.collection(db, coll)
        before = collection.find_one({"_id": doc_id})
        if before is None:
            return None
        collection.delete_one({"_id": doc_id})
        images = self._storage.images_enabled(db, coll)
        self._storage.record(
            "delete",
            db,
            coll,
            document_key={"_id": doc_id},
            pre_image=before if images else None,
        )
        return dict(before)


def sort_spec(sort: Any) -> list[tuple[str, Any]] | None:
    """A command's ``sort`` document as the (key, direction) list mongomock takes."""
    if sort is None:
        return None
    if not isinstance(sort, Mapping):
        raise CommandError(14, "sort must be a document")
    return list(sort.items()) or None
