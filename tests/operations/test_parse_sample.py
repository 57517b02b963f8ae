"""`check --sample N`: the value accepted is a whole number of documents, at least one."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import InvalidRequest
from operations.consistency import parse_sample


def test_no_sample_means_a_full_check() -> None:
    assert parse_sample(None) is None


@pytest.mark.parametrize(
    ("value", "size"),
    [(1, 1), (500, 500), ("1", 1), ("250", 250), (" 40 ", 40)],
)
def test_a_whole_number_is_the_sample_size(value: Any, size: int) -> None:
    found = parse_sample(value)

    assert found == size
    assert type(found) is int


@pytest.mark.parametrize(
    "value",
    [0, -1, "0", "-3", "many", "5x", "", 1.5, "1.5", True, [5]],
)
def test_anything_else_is_refused(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="--sample must be a whole number") as refused:
        parse_sample(value)

    assert repr(value) in str(refused.value)
