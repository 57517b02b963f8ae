from __future__ import annotations

import pytest

from checkpoints.keys import Keys
from core.errors import ConfigurationError


def test_every_key_lives_under_the_pipeline_prefix() -> None:
    keys = Keys("orders.v2_x-1")
    names = [keys.events, keys.dead, keys.checkpoint, keys.fence, keys.lease, keys.stats,
             keys.lease_since, keys.service, keys.last_applied, keys.version("db.docs/42")]
    assert all(name.startswith("cdc:orders.v2_x-1:") for name in names)
    assert len(set(names)) == len(names)
    assert keys.version("db.docs/42") == "cdc:orders.v2_x-1:version:db.docs/42"


@pytest.mark.parametrize("name", ["", "a b", "a*", "a:b", "ä", "x\n"])
def test_rejects_names_that_are_empty_or_could_match_other_pipelines(name: str) -> None:
    with pytest.raises(ConfigurationError):
        Keys(name)


def test_the_key_names_operators_use_are_the_documented_ones() -> None:
    # README and the history-lost message name these keys: they are part of the contract.
    keys = Keys("default")
    assert keys.pipeline == "default" and keys.prefix == "cdc:default:"
    assert (keys.events, keys.dead, keys.checkpoint) == (
        "cdc:default:events",
        "cdc:default:dead",
        "cdc:default:checkpoint",
    )
    assert (keys.fence, keys.lease, keys.lease_since) == (
        "cdc:default:fence",
        "cdc:default:lease",
        "cdc:default:lease_since",
    )
    assert (keys.stats, keys.last_applied, keys.version_prefix, keys.group) == (
        "cdc:default:stats",
        "cdc:default:last_applied",
        "cdc:default:version:",
        "indexer",
    )
    assert repr(keys) == "Keys('default')"


def test_a_bad_pipeline_name_says_what_is_allowed() -> None:
    allowed = r"must be non-empty and use only \[A-Za-z0-9_.-\]"
    with pytest.raises(ConfigurationError, match=allowed):
        Keys("a b")


def test_the_operator_keys_have_fixed_names_under_the_pipeline_prefix() -> None:
    """Key names are stored data: renaming one orphans what an older version wrote."""
    keys = Keys("p")
    assert (keys.bulk, keys.audit, keys.paused, keys.backfill, keys.requests) == (
        "cdc:p:events:bulk",
        "cdc:p:audit",
        "cdc:p:paused",
        "cdc:p:backfill",
        "cdc:p:requests",
    )
    assert keys.reply("r1") == "cdc:p:reply:r1"
