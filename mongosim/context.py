"""What a command handler sees: the deployment, the client connection and the command."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from mongosim.cursors import CursorRegistry
from mongosim.errors import CommandError
from mongosim.failpoints import FailPoints
from mongosim.oplog import Oplog
from mongosim.retries import RetriedWrites
from mongosim.storage import Storage
from mongosim.writes import DocumentWriter


@dataclass
class Deployment:
    """The single-member replica set's state, shared by every connection."""

    repl_set: str
    oplog: Oplog
    storage: Storage
    writer: DocumentWriter
    cursors: CursorRegistry = field(default_factory=CursorRegistry)
    failpoints: FailPoints = field(default_factory=FailPoints)
    retried: RetriedWrites = field(default_factory=RetriedWrites)
    primary: bool = True
    election_id: ObjectId = field(default_factory=ObjectId)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    port: int = 0
    connections_created: int = 0
    connections_open: int = 0

    @classmethod
    def create(cls, repl_set: str, oplog_size: int) -> Deployment:
        """An empty deployment whose oplog keeps *oplog_size* entries."""
        oplog = Oplog(oplog_size)
        storage = Storage(oplog)
        return cls(repl_set=repl_set, oplog=oplog, storage=storage, writer=DocumentWriter(storage))


@dataclass
class Connection:
    """One client connection; ``address`` is the host:port the client dialled."""

    id: int
    address: str
    app_name: str | None = None


@dataclass
class Call:
    """One command invocation."""

    deployment: Deployment
    connection: Connection
    db: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        """The command name (the body's first key)."""
        return next(iter(self.body))

    @property
    def target(self) -> Any:
        """The command's first value: usually the collection name."""
        return self.body[self.name]

    def collection_name(self) -> str:
        """The command's first value as a collection name.

        Raises CommandError 73 InvalidNamespace unless it is a non-empty string.
        """
        value = self.target
        if not isinstance(value, str) or not value:
            raise CommandError(73, f"collection name has invalid type {type(value).__name__}")
        return value


Handler = Callable[[Call], Awaitable[dict[str, Any]]]

WRITE = "write"
READ = "read"
ANY = "any"


@dataclass(frozen=True)
class CommandSpec:
    """A command: its handler and whether it needs a writable primary (WRITE),
    a primary or secondaryOk (READ), or neither (ANY)."""

    handler: Handler
    kind: str
