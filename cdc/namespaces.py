"""What a pipeline watches: one database, and all or some of its collections.

One collection is watched at collection scope; several, or the whole
database, at database scope, with a ``$match`` on ``ns.coll`` so changes of
other collections never leave the server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient

from core.errors import ConfigurationError

# What a client created without a document_class returns (AsyncMongoClient is invariant in it).
Document = dict[str, Any]

# Kept when the stream projects fullDocument down: every field capture reads besides it.
_CHANGE_FIELDS = (
    "_id",
    "operationType",
    "clusterTime",
    "wallTime",
    "ns",
    "to",
    "documentKey",
    "updateDescription",
)
# Events a database-scope stream must always let through, whatever collections it selects.
_DATABASE_EVENTS = ["dropDatabase", "invalidate"]


class WatchScope:
    """The namespaces of one pipeline: *database* and *collections* (empty: all of them).

    Raises ConfigurationError for an empty database name or a system collection."""

    def __init__(self, database: str, collections: Sequence[str] = ()) -> None:
        if not database:
            raise ConfigurationError("the watched database needs a name")
        if any(not name or name.startswith("system.") for name in collections):
            raise ConfigurationError(f"cannot watch collections {list(collections)!r}")
        self.database = database
        self.collections = tuple(dict.fromkeys(collections))

    def describe(self) -> str:
        if not self.collections:
            return f"{self.database}.*"
        return ",".join(f"{self.database}.{name}" for name in self.collections)

    def watches(self, namespace: str) -> bool:
        """Whether *namespace* ("db.coll") is one of the watched collections."""
        database, _, collection = namespace.partition(".")
        if database != self.database or not collection or collection.startswith("system."):
            return False
        return not self.collections or collection in self.collections

    def target(
        self, client: AsyncMongoClient[Document]
    ) -> AsyncCollection[Document] | AsyncDatabase[Document]:
        """What to call ``watch`` on."""
        database = client[self.database]
        if len(self.collections) == 1:
            return database[self.collections[0]]
        return database

    def pipeline(self, projection: Sequence[str] | None, pre_images: bool) -> list[Document]:
        """The change stream's aggregation stages.

        *projection* lists the document fields mapping reads: fullDocument
        (and the pre-image when *pre_images*) is cut down to them so the rest
        of a large document does not travel; None keeps whole documents."""
        stages: list[Document] = []
        if len(self.collections) > 1:
            names = list(self.collections)
            stages.append(
                {
                    "$match": {
                        "$or": [
                            {"ns.coll": {"$in": names}},
                            {"to.coll": {"$in": names}},
                            {"operationType": {"$in": _DATABASE_EVENTS}},
                        ]
                    }
                }
            )
        if projection is not None:
            kept: dict[str, int] = dict.fromkeys(_CHANGE_FIELDS, 1)
            images = ["fullDocument", *(["fullDocumentBeforeChange"] if pre_images else [])]
            for image in images:
                kept[f"{image}._id"] = 1
                kept.update({f"{image}.{path}": 1 for path in projection if path != "_id"})
            stages.append({"$project": kept})
        return stages

    async def collection_names(self, client: AsyncMongoClient[Document]) -> list[str]:
        """The collections to scan: the configured ones, or every non-system
        collection the database holds now."""
        if self.collections:
            return list(self.collections)
        names = await client[self.database].list_collection_names()
        return sorted(name for name in names if not name.startswith("system."))
