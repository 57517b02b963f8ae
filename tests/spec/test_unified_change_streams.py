"""pymongo's own unified change-stream spec tests, run against mongosim.

The spec JSON files and pymongo's unified test runners come from the sdist of
the installed pymongo version, fetched into .spec/ by scripts/fetch_spec_tests.sh.
Every spec test runs twice: through the asynchronous runner (AsyncMongoClient,
classes named TestUnified...) and the synchronous one (MongoClient, classes
named TestSyncUnified...).
pymongo's test package reads the server address from DB_IP/DB_PORT when it is
imported, so a free port is chosen first and mongosim is served on it, from
its own thread, for the duration of this module.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from mongosim import ThreadedMongoSim

pytestmark = pytest.mark.spec

SPEC_ROOT = Path(__file__).resolve().parents[2] / ".spec" / f"pymongo-{pymongo.version}"
UNIFIED_DIR = SPEC_ROOT / "test" / "change_streams" / "unified"
SPEC_FILES = (
    "change-streams.json",
    "change-streams-errors.json",
    "change-streams-resume-allowlist.json",
    "change-streams-resume-errorLabels.json",
    "change-streams-pre_and_post_images.json",
    "change-streams-clusterTime.json",
    "change-streams-showExpandedEvents.json",
    "change-streams-disambiguatedPaths.json",
    "change-streams-nsType.json",
)
# Spec tests mongosim does not pass, by description, with the reason.
SKIPPED: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _load_spec_classes() -> dict[str, type[unittest.TestCase]]:
    from test.asynchronous.unified_format import generate_test_classes as generate_async
    from test.unified_format import generate_test_classes as generate_sync

    wanted = {json.loads((UNIFIED_DIR / name).read_text())["description"] for name in SPEC_FILES}
    classes: dict[str, type[unittest.TestCase]] = {
        **generate_async(str(UNIFIED_DIR), module=__name__),
        **generate_sync(str(UNIFIED_DIR), module=__name__, class_name_prefix="Sync"),
    }
    selected = {
        name: cls
        for name, cls in classes.items()
        if cls.TEST_SPEC["description"] in wanted  # type: ignore[attr-defined]
    }
    for cls in selected.values():
        for test in cls.TEST_SPEC["tests"]:  # type: ignore[attr-defined]
            reason = SKIPPED.get(test["description"])
            if reason is not None:
                method_name = "test_" + test["description"].strip(". ").replace(" ", "_").replace(
                    ".", "_"
                )
                setattr(cls, method_name, unittest.skip(reason)(getattr(cls, method_name)))
    return selected


if not (SPEC_ROOT / "test" / "asynchronous" / "unified_format.py").is_file():

    def test_spec_tests_are_fetched() -> None:
        pytest.fail(
            f"pymongo {pymongo.version}'s spec tests are not in {SPEC_ROOT}: "
            "run scripts/fetch_spec_tests.sh"
        )

else:
    PORT = _free_port()
    os.environ["DB_IP"] = "127.0.0.1"
    os.environ["DB_PORT"] = str(PORT)
    sys.path.insert(0, str(SPEC_ROOT))
    globals().update(_load_spec_classes())

    @pytest.fixture(scope="module", autouse=True)
    def mongosim_server() -> Iterator[ThreadedMongoSim]:
        """mongosim on the port pymongo's test package was told about."""
        from test import client_context
        from test.asynchronous import async_client_context, get_loop

        with ThreadedMongoSim(port=PORT) as sim:
            yield sim
            async_client: Any = async_client_context.client
            if async_client is not None:
                get_loop().run_until_complete(async_client.close())
            sync_client: Any = client_context.client
            if sync_client is not None:
                sync_client.close()
