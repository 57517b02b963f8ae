"""The deployment's data: mongomock holds documents, this catalog adds what it lacks.

mongomock has no collection options (such as changeStreamPreAndPostImages) and
records no history; both are kept here, and every catalog change (drop,
rename, dropDatabase) is appended to the oplog.
"""

from __future__ import annotations

from typing import Any

import mongomock

from mongosim.errors import CommandError
from mongosim.oplog import Oplog

INTERNAL_DATABASES = frozenset({"admin", "config", "local"})


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

    def database(self, db: str) -> mongomock.Database[dict[str, Any]]:
        """The mongomock database *db* (created lazily on first write)."""
        return self._client[db]

    def collection(self, db: str, coll: str) -> mongomock.Collection[dict[str, Any]]:
        """The mongomock collection *db.coll* (created lazily on first write)."""
        check_namespace(db, coll)
        return self._client[db][coll]

    def databases(self) -> list[str]:
        """Names of databases holding at least one collection."""
        return [name for name in self._client.list_database_names() if self.collections(name)]

    def collections(self, db: str) -> list[str]:
        """Names of the collections in *db*."""
        return list(self._client[db].list_collection_names())

    def exists(self, db: str, coll: str) -> bool:
        """Whether *db.coll* exists."""
        return coll in self.collections(db)

    def options(self, db: str, coll: str) -> dict[str, Any]:
        """The options *db.coll* was created or last modified with."""
        return dict(self._options.get((db, coll), {}))

    def images_enabled(self, db: str, coll: str) -> bool:
        """Whether writes to *db.coll* record pre- and post-images for change streams."""
        images = self._options.get((db, coll), {}).get("changeStreamPreAndPostImages")
        return bool(isinstance(images, dict) and images.get("enabled"))

    def create(self, db: str, coll: str, options: dict[str, Any]) -> None:
        """Create *db.coll* with *options*.

        Raises CommandError 48 NamespaceExists if it exists.
        """
        check_namespace(db, coll)
        if self.exists(db, coll):
            raise CommandError(48, f"Collection {db}.{coll} already exists.")
        self._client[db].create_collection(coll)
        self._options[(db, coll)] = dict(options)

    def modify(self, db: str, coll: str, options: dict[str, Any]) -> None:
        """Apply collMod *options* to *db.coll*.

        Raises CommandError 26 NamespaceNotFound if it does not exist.
        """
        if not self.exists(db, coll):
            raise CommandError(26, f"ns does not exist: {db}.{coll}")
        self._options.setdefault((db, coll), {}).update(options)

    def drop(self, db: str, coll: str) -> bool:
        """Drop *db.coll*, recording a drop entry; returns whether it existed."""
        if not self.exists(db, coll):
            return False
        self._client[db].drop_collection(coll)
        self._options.pop((db, coll), None)
        self.oplog.append("drop", db, coll=coll)
        return True

    def rename(self, db: str, coll: str, to_db: str, to_coll: str, drop_target: bool) -> None:
        """Rename *db.coll* to *to_db.to_coll*, recording one rename entry.

        A target replaced with *drop_target* is dropped as part of the rename,
        without a drop entry of its own, as on the server. Raises CommandError
        26 if the source does not exist, 48 if the target exists and
        *drop_target* is false, 20 for a rename across databases.
        """
        check_namespace(to_db, to_coll)
        if not self.exists(db, coll):
            raise CommandError(26, "Source collection does not exist")
        if to_db != db:
            raise CommandError(20, "mongosim does not rename collections across databases")
        if (db, coll) == (to_db, to_coll):
            raise CommandError(20, "Can't rename a collection to itself")
        if self.exists(to_db, to_coll):
            if not drop_target:
                raise CommandError(48, "target namespace exists")
            self._client[to_db].drop_collection(to_coll)
            self._options.pop((to_db, to_coll), None)
        self._client[db][coll].rename(to_coll)
        options = self._options.pop((db, coll), None)
        if options is not None:
            self._options[(to_db, to_coll)] = options
        self.oplog.append("rename", db, coll=coll, to=(to_db, to_coll))

    def drop_database(self, db: str) -> None:
        """Drop every collection of *db*, then record a dropDatabase entry."""
        names = self.collections(db)
        for coll in names:
            self.drop(db, coll)
        self._client.drop_database(db)
        if names:
            self.oplog.append("dropDatabase", db)
