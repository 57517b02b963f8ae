"""Handshake, monitoring and diagnostic commands: hello, ping, buildInfo and friends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson.int64 import Int64

from mongosim.context import ANY, Call, CommandSpec
from mongosim.errors import CommandError

SERVER_VERSION = "7.0.0"
MAX_WIRE_VERSION = 21
MAX_BSON_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = 48_000_000
MAX_WRITE_BATCH = 100_000


async def hello(call: Call) -> dict[str, Any]:
    """Describe this server as the primary (or, stepped down, a secondary) of the set.

    No topologyVersion is sent: without awaitable hello, a driver seeing one
    would spin its streaming monitor.
    """
    deployment, connection = call.deployment, call.connection
    client = call.body.get("client")
    if isinstance(client, dict):
        application = client.get("application")
        if isinstance(application, dict) and isinstance(application.get("name"), str):
            connection.app_name = application["name"]
    last = deployment.oplog.latest
    op_time = {"ts": last.ts, "t": Int64(1)}
    primary = deployment.primary
    reply: dict[str, Any] = {}
    if call.body.get("helloOk"):
        reply["helloOk"] = True
    reply["isWritablePrimary" if call.name == "hello" else "ismaster"] = primary
    reply["secondary"] = not primary
    reply["setName"] = deployment.repl_set
    reply["setVersion"] = 1
    reply["hosts"] = [connection.address]
    if primary:
        reply["primary"] = connection.address
        reply["electionId"] = deployment.election_id
    reply["me"] = connection.address
    reply["lastWrite"] = {
        "opTime": op_time,
        "lastWriteDate": last.wall,
        "majorityOpTime": op_time,
        "majorityWriteDate": last.wall,
    }
    reply.update(
        maxBsonObjectSize=MAX_BSON_SIZE,
        maxMessageSizeBytes=MAX_MESSAGE_SIZE,
        maxWriteBatchSize=MAX_WRITE_BATCH,
        localTime=datetime.now(UTC),
        logicalSessionTimeoutMinutes=30,
        connectionId=connection.id,
        minWireVersion=0,
        maxWireVersion=MAX_WIRE_VERSION,
        readOnly=False,
        ok=1.0,
    )
    return reply


async def ok(call: Call) -> dict[str, Any]:
    """Commands that have nothing to report (ping, endSessions, killAllSessions...)."""
    return {"ok": 1.0}


async def build_info(call: Call) -> dict[str, Any]:
    """Version information; the version matches maxWireVersion 21 (MongoDB 7.0)."""
    return {
        "version": SERVER_VERSION,
        "gitVersion": "mongosim",
        "versionArray": [7, 0, 0, 0],
        "bits": 64,
        "debug": False,
        "maxBsonObjectSize": MAX_BSON_SIZE,
        "storageEngines": ["mongosim"],
        "modules": [],
        "ok": 1.0,
    }


async def get_cmd_line_opts(call: Call) -> dict[str, Any]:
    """The options the server runs with, as a real mongod reports them."""
    deployment = call.deployment
    return {
        "argv": ["mongosim", "--port", str(deployment.port), "--replSet", deployment.repl_set],
        "parsed": {
            "net": {"port": deployment.port, "bindIp": "127.0.0.1"},
            "replication": {"replSet": deployment.repl_set},
            "setParameter": {"enableTestCommands": "1"},
        },
        "ok": 1.0,
    }


_PARAMETERS: dict[str, Any] = {
    "enableTestCommands": True,
    "featureCompatibilityVersion": {"version": "7.0"},
    "requireApiVersion": False,
    "authenticationMechanisms": [],
    "transactionLifetimeLimitSeconds": 60,
}


async def get_parameter(call: Call) -> dict[str, Any]:
    """Server parameters: all of them for ``getParameter: "*"``, else those named."""
    if call.target == "*" or call.body.get("allParameters"):
        return {**_PARAMETERS, "ok": 1.0}
    found = {name: value for name, value in _PARAMETERS.items() if name in call.body}
    if not found:
        raise CommandError(72, "no option found to get")
    return {**found, "ok": 1.0}


async def server_status(call: Call) -> dict[str, Any]:
    """A small serverStatus: process, connections, storage engine and replication state."""
    deployment = call.deployment
    now = datetime.now(UTC)
    return {
        "host": call.connection.address,
        "version": SERVER_VERSION,
        "process": "mongod",
        "pid": Int64(0),
        "uptime": float((now - deployment.started).total_seconds()),
        "localTime": now,
        "connections": {
            "current": deployment.connections_open,
            "available": 1_000_000,
            "totalCreated": deployment.connections_created,
        },
        "storageEngine": {"name": "mongosim", "supportsCommittedReads": True},
        "repl": {
            "setName": deployment.repl_set,
            "isWritablePrimary": deployment.primary,
            "secondary": not deployment.primary,
            "hosts": [call.connection.address],
        },
        "ok": 1.0,
    }


async def configure_fail_point(call: Call) -> dict[str, Any]:
    """Arm or disarm a fail point (see mongosim.failpoints)."""
    count = call.deployment.failpoints.configure(call.body)
    return {"count": count, "ok": 1.0}


HANDLERS: dict[str, CommandSpec] = {
    "hello": CommandSpec(hello, ANY),
    "isMaster": CommandSpec(hello, ANY),
    "ismaster": CommandSpec(hello, ANY),
    "ping": CommandSpec(ok, ANY),
    "buildInfo": CommandSpec(build_info, ANY),
    "buildinfo": CommandSpec(build_info, ANY),
    "getCmdLineOpts": CommandSpec(get_cmd_line_opts, ANY),
    "getParameter": CommandSpec(get_parameter, ANY),
    "serverStatus": CommandSpec(server_status, ANY),
    "endSessions": CommandSpec(ok, ANY),
    "killAllSessions": CommandSpec(ok, ANY),
    "killSessions": CommandSpec(ok, ANY),
    "refreshSessions": CommandSpec(ok, ANY),
    "configureFailPoint": CommandSpec(configure_fail_point, ANY),
}
