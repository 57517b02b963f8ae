"""The deployment's data: mongomock holds documents, this catalog adds what it lacks.

mongomock has no collection options (such as changeStreamPreAndPostImages),
collection UUIDs or views, and records no history; all are kept here, and
every catalog change (create, collMod, drop, rename, dropDatabase) is appended
to the oplog.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import mongomock
from bson.binary import Binary

from mongosim.errors import CommandError
from mongosim.oplog import Oplog, OplogEntry

INTERNAL_DATABASES = frozenset({"admin", "config", "local"})
ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


def check_namespace(db: str, coll: str) -> None:
    """Raise CommandError 73 InvalidNamespace for names the server rejects."""
    if not db or any(c in db for c in '/\\. "$\x00'):
        raise CommandError(73, f"Invalid database name: '{db}'")
    if not coll or "$" in coll or "\x00" in coll or coll.startswith("."):
        raise CommandError(73, f"Invalid collection name: '{coll}'")


class Storage:
    """Documents and collection metadata, shared by every connection.

    Must be used from the event loop thread only: mongomock is not thread-safe.
    """

    def __init__(self, oplog: Oplog) -> None:
        self.oplog = oplog
        self._client: mongomock.MongoClient[dict[str, Any]] = mongomock.MongoClient()
        self._options: dict[tuple[str, str], dict[str, Any]] = {}
        self._uuids: dict[tuple[str, str], Binary] = {}
        self._views: dict[tuple[str, str], dict[str, Any]] = {}

    def database(self, db: str) -> mongomock.Database[dict[str, Any]]:
        """The mongomock database *db* (created lazily on first write)."""
        return self._client[db]

    def collection(self, db: str, coll: str) -> mongomock.Collection[dict[str, Any]]:
        """The mongomock collection *db.coll* (created lazily on first write).

        Raises CommandError 166 CommandNotSupportedOnView if *db.coll* is a view.
        """
        check_namespace(db, coll)
        if (db, coll) in self._views:
            raise CommandError(166, f"Namespace {db}.{coll} is a view, not a collection")
        return self._client[db][coll]

    def databases(self) -> list[str]:
        """Names of databases holding at least one collection."""
        return [name for name in self._client.list_database_names() if self.collections(name)]

    def collections(self, db: str) -> list[str]:
        """Names of the collections in *db* (views excluded)."""
        return list(self._client[db].list_collection_names())

    def views(self, db: str) -> dict[str, dict[str, Any]]:
        """The views of *db*: name to definition (``viewOn``, ``pipeline``)."""
        return {name: dict(view) for (vdb, name), view in self._views.items() if vdb == db}

    def exists(self, db: str, coll: str) -> bool:
        """Whether the collection *db.coll* exists."""
        return coll in self.collections(db)

    def options(self, db: str, coll: str) -> dict[str, Any]:
        """The options *db.coll* was created or last modified with."""
        return dict(self._options.get((db, coll), {}))

    def uuid(self, db: str, coll: str) -> Binary:
        """The UUID of the collection *db.coll*; it keeps it when renamed."""
        found = self._uuids.get((db, coll))
        if found is None:
            found = self._uuids[(db, coll)] = Binary.from_uuid(uuid4())
        return found

    def record(self, op: str, db: str, coll: str, **fields: Any) -> OplogEntry:
        """Append an oplog entry for a change to the collection *db.coll*, with its UUID."""
        return self.oplog.append(op, db, coll=coll, uuid=self.uuid(db, coll), **fields)

    def images_enabled(self, db: str, coll: str) -> bool:
        """Whether writes to *db.coll* record pre- and post-images for change streams."""
        images = self._options.get((db, coll), {}).get("changeStreamPreAndPostImages")
        return bool(isinstance(images, dict) and images.get("enabled"))

    def _check_free(self, db: str, coll: str) -> None:
        check_namespace(db, coll)
        if self.exists(db, coll) or (db, coll) in self._views:
            raise CommandError(48, f"Collection {db}.{coll} already exists.")

    def create(self, db: str, coll: str, options: dict[str, Any]) -> None:
        """Create *db.coll* with *options*, recording a create entry.

        Raises CommandError 48 NamespaceExists if it (or a view of that name) exists.
        """
        self._check_free(db, coll)
        self._client[db].create_collection(coll)
        self._options[(db, coll)] = dict(options)
        description = dict(options)
        if "clusteredIndex" not in options:
            description["idIndex"] = dict(ID_INDEX)
        self.record("create", db, coll, description=description)

    def ensure(self, db: str, coll: str) -> None:
        """Create *db.coll* unless it exists, as an insert, upsert or createIndexes does."""
        if not self.exists(db, coll):
            self.create(db, coll, {})

    def create_view(self, db: str, name: str, view_on: str, pipeline: list[Any]) -> None:
        """Define the view *db.name* on *view_on*, recording a create entry.

        Raises CommandError 48 NamespaceExists if the name is taken.
        """
        self._check_free(db, name)
        definition = {"viewOn": view_on, "pipeline": pipeline}
        self._views[(db, name)] = definition
        self.oplog.append("create", db, coll=name, description=dict(definition), ns_type="view")

    def modify(self, db: str, coll: str, options: dict[str, Any]) -> None:
        """Apply collMod *options* to *db.coll*, recording a modify entry.

        Raises CommandError 26 NamespaceNotFound if it does not exist.
        """
        if not self.exists(db, coll):
            raise CommandError(26, f"ns does not exist: {db}.{coll}")
        before = {"uuid": self.uuid(db, coll), **self._options.get((db, coll), {})}
        self._options.setdefault((db, coll), {}).update(options)
        self.record(
            "modify",
            db,
            coll,
            description=dict(options),
            before={"collectionOptions": before},
        )

    def _discard(self, db: str, coll: str) -> Binary:
        """Remove the collection *db.coll* without an oplog entry; returns its UUID."""
        uuid = self.uuid(db, coll)
        self._client[db].drop_collection(coll)
        self._options.pop((db, coll), None)
        self._uuids.pop((db, coll), None)
        return uuid

    def drop(self, db: str, coll: str) -> bool:
        """Drop the collection or view *db.coll*, recording a drop entry; returns
        whether it existed."""
        if self._views.pop((db, coll), None) is not None:
            self.oplog.append("drop", db, coll=coll, ns_type="view")
            return True
        if not self.exists(db, coll):
            return False
        self.oplog.append("drop", db, coll=coll, uuid=self._discard(db, coll))
        return True

    def rename(self, db: str, coll: str, to_db: str, to_coll: str, drop_target: bool) -> None:
        """Rename *db.coll* to *to_db.to_coll*, recording one rename entry.

        A target replaced with *drop_target* is dropped as part of the rename
        (its UUID is the entry's ``dropTarget``), without a drop entry of its
        own, as on the server. Raises CommandError 26 if the source does not
        exist, 166 if it is a view, 48 if the target exists and *drop_target* is
        false or the target is a view, 20 for a rename across databases.
        """
        check_namespace(to_db, to_coll)
        if (db, coll) in self._views:
            raise CommandError(166, f"cannot rename view: {db}.{coll}")
        if not self.exists(db, coll):
            raise CommandError(26, "Source collection does not exist")
        if to_db != db:
            raise CommandError(20, "mongosim does not rename collections across databases")
        if (db, coll) == (to_db, to_coll):
            raise CommandError(20, "Can't rename a collection to itself")
        if (to_db, to_coll) in self._views:
            raise CommandError(48, "a view already exists with that name")
        description: dict[str, Any] | None = None
        if self.exists(to_db, to_coll):
            if not drop_target:
                raise CommandError(48, "target namespace exists")
            description = {"dropTarget": self._discard(to_db, to_coll)}
        uuid = self.uuid(db, coll)
        self._client[db][coll].rename(to_coll)
        options = self._options.pop((db, coll), None)
        if options is not None:
            self._options[(to_db, to_coll)] = options
        self._uuids[(to_db, to_coll)] = self._uuids.pop((db, coll))
        self.oplog.append(
            "rename", db, coll=coll, to=(to_db, to_coll), uuid=uuid, description=description
        )

    def drop_database(self, db: str) -> None:
        """Drop every collection of *db* (its views silently), then record a
        dropDatabase entry."""
        names = self.collections(db)
        for coll in names:
            self.drop(db, coll)
        for name in self.views(db):
            del self._views[(db, name)]
        self._client.drop_database(db)
        if names:
            self.oplog.append("dropDatabase", db)
