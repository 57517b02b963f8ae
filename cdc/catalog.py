"""Changes to whole collections (drop, rename, dropDatabase) as queue events.

The indexer applies them in stream order, after every change queued before
them (see indexer.collections): what a watched collection loses, the index
loses; what is renamed into the watched set keeps its vectors."""

from __future__ import annotations

from datetime import UTC, datetime

from cdc.mapping import CollectionChange, event_id_of
from cdc.namespaces import WatchScope
from core.events import CollectionDroppedEvent, CollectionRenamedEvent, DocumentEvent


def catalog_events(change: CollectionChange, scope: WatchScope) -> list[DocumentEvent]:
    """What *change* means for the index of *scope*: nothing (another namespace,
    or an operation that leaves the documents as they are), a drop of each watched
    namespace it empties, or a rename into a watched name."""
    version = change.cluster_time
    if version is None:
        return []
    event_id = event_id_of(change.token)
    timestamp = datetime.fromtimestamp(version >> 32, UTC)

    def dropped(namespace: str, suffix: str = "", **metadata: str) -> CollectionDroppedEvent:
        return CollectionDroppedEvent(
            event_id=event_id + suffix,
            namespace=namespace,
            version=version,
            timestamp=timestamp,
            metadata=metadata,
        )

    operation, namespace, to = change.operation_type, change.namespace, change.to
    if operation == "drop" and scope.watches(namespace):
        return [dropped(namespace)]
    if operation == "rename" and to is not None:
        if scope.watches(to):
            renamed = CollectionRenamedEvent(
                event_id=event_id,
                namespace=namespace,
                version=version,
                timestamp=timestamp,
                to=to,
                backfill=not scope.watches(namespace),
            )
            return [renamed]
        if scope.watches(namespace):
            return [dropped(namespace, to=to)]
    if operation == "dropDatabase" and namespace == scope.database:
        if not scope.collections:
            return [dropped(namespace)]
        return [dropped(f"{namespace}.{name}", f":{name}") for name in scope.collections]
    return []
