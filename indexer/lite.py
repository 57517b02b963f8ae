"""The lifetime of Milvus Lite's in-process servers, one per database path."""

from __future__ import annotations

import os
import threading


def is_lite(uri: str) -> bool:
    """Whether pymilvus serves *uri* from a Milvus Lite database in this process."""
    return uri.endswith(".db")


class LiteServers:
    """Counts the open stores of each Milvus Lite database path.

    Milvus Lite serves a path from one in-process server that holds the
    path's lock until released; closing a client does not release it. The
    server is released when the last store on the path stops, so another
    process (the next sidecar) can open the database.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}

    def acquire(self, uri: str) -> None:
        """Count one more store on *uri*; call before opening a client on it."""
        with self._lock:
            path = os.path.abspath(uri)
            self._users[path] = self._users.get(path, 0) + 1

    def release(self, uri: str) -> None:
        """Count one store less on *uri*, after its client closed; the last one
        stops the server (which can take seconds on a large database)."""
        from milvus_lite.server_manager import server_manager_instance

        with self._lock:
            path = os.path.abspath(uri)
            self._users[path] -= 1
            if self._users[path]:
                return
            del self._users[path]
            server_manager_instance.release_server(path)


LITE_SERVERS = LiteServers()
"""The process's one count: Milvus Lite's servers are per process too."""
