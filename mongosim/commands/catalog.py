"""Catalog commands: databases, collections and indexes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongosim.context import READ, WRITE, Call, CommandSpec
from mongosim.cursors import cursor_reply
from mongosim.engine import matches
from mongosim.errors import CommandError
from mongosim.storage import ID_INDEX, check_namespace

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
# Fields of an index specification that are not options of the index.
INDEX_SPEC_FIELDS = frozenset({"v", "key", "name"})


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
    views = storage.views(call.db)
    for name in sorted([*storage.collections(call.db), *views]):
        if name in views:
            entries.append(
                {"name": name, "type": "view", "options": views[name], "info": {"readOnly": True}}
            )
            continue
        entries.append(
            {
                "name": name,
                "type": "collection",
                "options": storage.options(call.db, name),
                "info": {"readOnly": False, "uuid": storage.uuid(call.db, name)},
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
    """Create a collection with its options (changeStreamPreAndPostImages included),
    or a view (``viewOn``, ``pipeline``).

    Raises CommandError 48 NamespaceExists if the name is taken.
    """
    storage = call.deployment.storage
    view_on = call.body.get("viewOn")
    if view_on is None:
        storage.create(call.db, call.collection_name(), _collection_options(call.body))
        return {"ok": 1.0}
    pipeline = call.body.get("pipeline", [])
    if not isinstance(view_on, str) or not view_on:
        raise CommandError(73, "'viewOn' must be a non-empty string")
    if not isinstance(pipeline, list) or not all(isinstance(s, Mapping) for s in pipeline):
        raise CommandError(14, "'pipeline' must be an array of documents")
    if any("$changeStream" in stage for stage in pipeline):
        raise CommandError(167, "$changeStream cannot be used in a view definition")
    storage.create_view(call.db, call.collection_name(), view_on, list(pipeline))
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
    """Create indexes through mongomock (unique indexes are enforced).

    Each new index is recorded as the server does: one createIndexes entry per
    index on an empty collection, one for them all otherwise.
    """
    name = call.collection_name()
    indexes = call.body.get("indexes")
    if not isinstance(indexes, list) or not indexes:
        raise CommandError(2, "Must specify at least one index to create")
    for index in indexes:
        if not isinstance(index, Mapping) or not isinstance(index.get("key"), Mapping):
            raise CommandError(2, "index specification must contain a key document")
    storage = call.deployment.storage
    existed = storage.exists(call.db, name)
    collection = storage.collection(call.db, name)
    storage.ensure(call.db, name)
    before = len(collection.index_information())
    built: list[dict[str, Any]] = []
    for index in indexes:
        known = set(collection.index_information())
        options = {k: v for k, v in index.items() if k in ("name", "unique", "sparse")}
        index_name = collection.create_index(list(index["key"].items()), **options)
        if index_name not in known:
            rest = {k: v for k, v in index.items() if k not in INDEX_SPEC_FIELDS}
            built.append({"v": 2, "key": dict(index["key"]), "name": index_name, **rest})
    if built:
        groups = [built] if collection.find_one({}) is not None else [[spec] for spec in built]
        for group in groups:
            storage.record("createIndexes", call.db, name, description={"indexes": group})
    return {
        "createdCollectionAutomatically": not existed,
        "numIndexesBefore": before,
        "numIndexesAfter": len(collection.index_information()),
        "ok": 1.0,
    }


def _index_spec(name: str, info: Mapping[str, Any]) -> dict[str, Any]:
    spec = {"v": 2, "key": dict(info["key"]), "name": name}
    for option in ("unique", "sparse"):
        if info.get(option):
            spec[option] = True
    return spec


async def list_indexes(call: Call) -> dict[str, Any]:
    """The collection's indexes. Raises CommandError 26 if it does not exist."""
    name = call.collection_name()
    storage = call.deployment.storage
    if not storage.exists(call.db, name):
        raise CommandError(26, f"ns does not exist: {call.db}.{name}")
    information = storage.collection(call.db, name).index_information()
    indexes = [_index_spec(index_name, info) for index_name, info in information.items()]
    return cursor_reply(0, f"{call.db}.{name}", indexes, first=True)


async def drop_indexes(call: Call) -> dict[str, Any]:
    """Drop one index by name or key, or all but ``_id_`` with ``"*"``; each
    dropped index is recorded as one dropIndexes entry."""
    name = call.collection_name()
    storage = call.deployment.storage
    collection = storage.collection(call.db, name)
    existing = collection.index_information()
    index = call.body.get("index")
    if index == "*":
        collection.drop_indexes()
    elif isinstance(index, str):
        collection.drop_index(index)
    elif isinstance(index, Mapping):
        collection.drop_index(list(index.items()))
    else:
        raise CommandError(14, "index must be a name, a key document or '*'")
    remaining = collection.index_information()
    for index_name, info in existing.items():
        if index_name not in remaining:
            spec = _index_spec(index_name, info)
            storage.record("dropIndexes", call.db, name, description={"indexes": [spec]})
    return {"nIndexesWas": len(existing), "ok": 1.0}


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
