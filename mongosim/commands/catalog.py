"""Catalog commands: databases, collections and indexes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongosim.context import READ, WRITE, Call, CommandSpec
from mongosim.cursors import cursor_reply
from mongosim.engine import matches
from mongosim.errors import CommandError
from mongosim.storage import check_namespace

# Fields of create/collMod that describe the collection, as opposed to the
# generic command fields (writeConcern, lsid, $clusterTime...).
COLLECTION_OPTIONS = frozenset(
    {
        "capped",
        "size",
        "max",
        "validator",
        "validationLevel",
        "validationAction",
        "changeStreamPreAndPostImages",
        "collation",
        "timeseries",
        "expireAfterSeconds",
        "clusteredIndex",
        "storageEngine",
        "indexOptionDefaults",
        "recordPreImages",
    }
)
ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


def _collection_options(body: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key in COLLECTION_OPTIONS}


async def list_databases(call: Call) -> dict[str, Any]:
    """Databases with at least one collection; honours ``nameOnly`` and ``filter``."""
    storage = call.deployment.storage
    entries = [{"name": name, "sizeOnDisk": 4096.0, "empty": False} for name in storage.databases()]
    query = call.body.get("filter")
    if isinstance(query, Mapping) and query:
        entries = [entry for entry in entries if matches(query, entry)]
    if call.body.get("nameOnly"):
        entries = [{"name": entry["name"]} for entry in entries]
        return {"databases": entries, "ok": 1.0}
    return {"databases": entries, "totalSize": 4096.0 * len(entries), "ok": 1.0}


async def list_collections(call: Call) -> dict[str, Any]:
    """The database's collections as a cursor; honours ``filter`` and ``nameOnly``."""
    storage = call.deployment.storage
    entries: list[dict[str, Any]] = []
    for name in sorted(storage.collections(call.db)):
        entries.append(
            {
                "name": name,
                "type": "collection",
                "options": storage.options(call.db, name),
                "info": {"readOnly": False},
                "idIndex": ID_INDEX,
            }
        )
    query = call.body.get("filter")
    if isinstance(query, Mapping) and query:
        entries = [entry for entry in entries if matches(query, entry)]
    if call.body.get("nameOnly"):
        entries = [{"name": entry["name"], "type": entry["type"]} for entry in entries]
    return cursor_reply(0, f"{call.db}.$cmd.listCollections", entries, first=True)


async def create(call: Call) -> dict[str, Any]:
    """Create a collection with its options (changeStreamPreAndPostImages included).

    Raises CommandError 48 NamespaceExists if it exists, 115 for views.
    """
    if "viewOn" in call.body:
        raise CommandError(115, "mongosim does not support views")
    call.deployment.storage.create(call.db, call.collection_name(), _collection_options(call.body))
    return {"ok": 1.0}


async def coll_mod(call: Call) -> dict[str, Any]:
    """Change a collection's options. Raises CommandError 26 if it does not exist."""
    call.deployment.storage.modify(call.db, call.collection_name(), _collection_options(call.body))
    return {"ok": 1.0}


async def drop(call: Call) -> dict[str, Any]:
    """Drop a collection; dropping a missing one succeeds, as on MongoDB 7.0."""
    name = call.collection_name()
    check_namespace(call.db, name)
    indexes = 0
    storage = call.deployment.storage
    if storage.exists(call.db, name):
        indexes = len(storage.collection(call.db, name).index_information())
    storage.drop(call.db, name)
    return {"nIndexesWas": indexes, "ns": f"{call.db}.{name}", "ok": 1.0}


async def drop_database(call: Call) -> dict[str, Any]:
    """Drop every collection of the database."""
    call.deployment.storage.drop_database(call.db)
    return {"dropped": call.db, "ok": 1.0}


async def rename_collection(call: Call) -> dict[str, Any]:
    """``renameCollection: "db.a", to: "db.b"``; only on the admin database.

    Raises CommandError 13 elsewhere, 26 / 48 / 20 as Storage.rename does.
    """
    if call.db != "admin":
        raise CommandError(13, "renameCollection may only be run against the admin database.")
    source, target = call.target, call.body.get("to")
    if not isinstance(source, str) or not isinstance(target, str):
        raise CommandError(14, "renameCollection and to must be namespace strings")
    src_db, _, src_coll = source.partition(".")
    dst_db, _, dst_coll = target.partition(".")
    check_namespace(src_db, src_coll)
    call.deployment.storage.rename(
        src_db, src_coll, dst_db, dst_coll, bool(call.body.get("dropTarget", False))
    )
    return {"ok": 1.0}


async def create_indexes(call: Call) -> dict[str, Any]:
    """Create indexes through mongomock (unique indexes are enforced)."""
    name = call.collection_name()
    storage = call.deployment.storage
    existed = storage.exists(call.db, name)
    if not existed:
        storage.create(call.db, name, {})
    collection = storage.collection(call.db, name)
    before = len(collection.index_information())
    indexes = call.body.get("indexes")
    if not isinstance(indexes, list) or not indexes:
        raise CommandError(2, "Must specify at least one index to create")
    for index in indexes:
        if not isinstance(index, Mapping) or not isinstance(index.get("key"), Mapping):
            raise CommandError(2, "index specification must contain a key document")
        options = {k: v for k, v in index.items() if k in ("name", "unique", "sparse")}
        collection.create_index(list(index["key"].items()), **options)
    return {
        "createdCollectionAutomatically": not existed,
        "numIndexesBefore": before,
        "numIndexesAfter": len(collection.index_information()),
        "ok": 1.0,
    }


async def list_indexes(call: Call) -> dict[str, Any]:
    """The collection's indexes. Raises CommandError 26 if it does not exist."""
    name = call.collection_name()
    storage = call.deployment.storage
    if not storage.exists(call.db, name):
        raise CommandError(26, f"ns does not exist: {call.db}.{name}")
    indexes = []
    for index_name, info in storage.collection(call.db, name).index_information().items():
        entry = {"v": 2, "key": dict(info["key"]), "name": index_name}
        if info.get("unique"):
            entry["unique"] = True
        indexes.append(entry)
    return cursor_reply(0, f"{call.db}.{name}", indexes, first=True)


async def drop_indexes(call: Call) -> dict[str, Any]:
    """Drop one index by name or key, or all but ``_id_`` with ``"*"``."""
    name = call.collection_name()
    collection = call.deployment.storage.collection(call.db, name)
    before = len(collection.index_information())
    index = call.body.get("index")
    if index == "*":
        collection.drop_indexes()
    elif isinstance(index, str):
        collection.drop_index(index)
    elif isinstance(index, Mapping):
        collection.drop_index(list(index.items()))
    else:
        raise CommandError(14, "index must be a name, a key document or '*'")
    return {"nIndexesWas": before, "ok": 1.0}


HANDLERS: dict[str, CommandSpec] = {
    "listDatabases": CommandSpec(list_databases, READ),
    "listCollections": CommandSpec(list_collections, READ),
    "create": CommandSpec(create, WRITE),
    "collMod": CommandSpec(coll_mod, WRITE),
    "drop": CommandSpec(drop, WRITE),
    "dropDatabase": CommandSpec(drop_database, WRITE),
    "renameCollection": CommandSpec(rename_collection, WRITE),
    "createIndexes": CommandSpec(create_indexes, WRITE),
    "listIndexes": CommandSpec(list_indexes, READ),
    "dropIndexes": CommandSpec(drop_indexes, WRITE),
}
