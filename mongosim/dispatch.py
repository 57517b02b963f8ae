"""Runs one command: fail points, primary checks, the handler, error shaping, cluster time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from bson.binary import Binary
from bson.int64 import Int64
from pymongo.errors import OperationFailure

from mongosim.commands import COMMANDS
from mongosim.context import ANY, READ, WRITE, Call, Connection, Deployment
from mongosim.errors import RETRYABLE_CODES, CloseConnection, CommandError
from mongosim.retries import retry_key
from mongosim.writes import ENGINE_ERRORS

log = logging.getLogger("mongosim")

# Commands a failCommand fail point never applies to, so a test can always disarm it.
NEVER_FAIL = frozenset({"configureFailPoint"})
RETRYABLE_WRITE_LABEL = "RetryableWriteError"
_SIGNATURE = {"hash": Binary(b"\x00" * 20), "keyId": Int64(0)}


class Dispatcher:
    """Executes commands against one deployment."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment

    async def execute(
        self, connection: Connection, db: str, body: dict[str, Any], secondary_ok: bool
    ) -> dict[str, Any]:
        """The reply to command *body* on database *db*.

        Raises CloseConnection when the connection must be dropped without a reply.
        Never raises for anything the client sent: errors become error replies.
        """
        name = next(iter(body), "")
        try:
            reply = await self._run(connection, db, name, body, secondary_ok)
        except CommandError as exc:
            if (
                name in COMMANDS
                and COMMANDS[name].kind == WRITE
                and "txnNumber" in body
                and exc.code in RETRYABLE_CODES
                and not exc.labels_fixed
            ):
                exc.labels.append(RETRYABLE_WRITE_LABEL)
            reply = exc.reply()
        except CloseConnection:
            raise
        except OperationFailure as exc:
            reply = CommandError(exc.code or 2, str(exc)).reply()
        except NotImplementedError as exc:
            reply = CommandError(115, f"not supported by mongosim: {exc}").reply()
        except ENGINE_ERRORS as exc:
            log.info("command %s rejected by the storage engine: %r", name, exc)
            reply = CommandError(2, f"{type(exc).__name__}: {exc}").reply()
        except Exception:
            # Nothing a client sends may take the server down: report and carry on.
            log.exception("command %s failed inside mongosim", name)
            reply = CommandError(1, f"mongosim internal error running {name}").reply()
        oplog = self._deployment.oplog
        reply["operationTime"] = oplog.clock.now
        reply["$clusterTime"] = {"clusterTime": oplog.clock.now, "signature": _SIGNATURE}
        return reply

    async def _run(
        self, connection: Connection, db: str, name: str, body: dict[str, Any], secondary_ok: bool
    ) -> dict[str, Any]:
        spec = COMMANDS.get(name)
        if spec is None:
            raise CommandError(59, f"no such command: '{name}'")
        deployment = self._deployment
        wce = None
        failure = None
        if name not in NEVER_FAIL:
            failure = deployment.failpoints.for_command(name, connection.app_name)
            if failure is not None:
                if failure.block_seconds:
                    await asyncio.sleep(failure.block_seconds)
                if failure.close_connection:
                    raise CloseConnection()
                if failure.error is not None:
                    raise failure.error
                wce = failure.write_concern_error
        self._check_role(spec.kind, body, secondary_ok)
        if body.get("startTransaction") or "autocommit" in body:
            raise CommandError(20, "mongosim does not support multi-document transactions")
        key = retry_key(body) if spec.kind == WRITE else None
        reply = None if key is None else deployment.retried.result(key)
        if reply is None:
            reply = await spec.handler(Call(deployment, connection, db, body))
            if key is not None and reply.get("ok"):
                deployment.retried.remember(key, reply)
        if wce is not None:
            reply["writeConcernError"] = wce
            labels = failure.write_concern_labels if failure is not None else None
            if labels is None and key is not None and wce.get("code") in RETRYABLE_CODES:
                labels = (RETRYABLE_WRITE_LABEL,)
            if labels:
                reply["errorLabels"] = list(labels)
        return reply

    def _check_role(self, kind: str, body: Mapping[str, Any], secondary_ok: bool) -> None:
        if self._deployment.primary or kind == ANY:
            return
        if kind == WRITE:
            raise CommandError(10107, "not primary")
        preference = body.get("$readPreference")
        mode = preference.get("mode") if isinstance(preference, Mapping) else None
        if kind == READ and not secondary_ok and mode in (None, "primary"):
            raise CommandError(13435, "not primary and secondaryOk=false")
