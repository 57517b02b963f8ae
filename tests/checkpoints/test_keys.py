from __future__ import annotations

import pytest

from checkpoints.keys import Keys
from core.errors import ConfigurationError


def test_every_key_lives_under_the_pipeline_prefix() -> None:
    keys = Keys("orders.v2_x-1")
    names = [keys.events, keys.dead, keys.checkpoint, keys.fence, keys.lease, keys.stats,
             keys.lease_since, keys.last_applied, keys.version("db.docs/42")]
    assert all(name.startswith("cdc:orders.v2_x-1:") for name in names)
    assert len(set(names)) == len(names)
    assert keys.version("db.docs/42") == "cdc:orders.v2_x-1:version:db.docs/42"


@pytest.mark.parametrize("name", ["", "a b", "a*", "a:b", "ä", "x\n"])
def test_rejects_names_that_are_empty_or_could_match_other_pipelines(name: str) -> None:
    with pytest.raises(ConfigurationError):
        Keys(name)
