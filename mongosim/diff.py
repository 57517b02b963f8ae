"""``updateDescription`` for update events, computed from a document's before and after.

Follows the server's delta format: changed or added fields appear in
``updatedFields`` under their dotted path, nested documents are descended
into, arrays are compared element by element, and an array that only got
shorter is reported in ``truncatedArrays``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def update_description(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The ``updateDescription`` of a change from *before* to *after*."""
    updated: dict[str, Any] = {}
    removed: list[str] = []
    truncated: list[dict[str, Any]] = []
    _diff_document(before, after, "", updated, removed, truncated)
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": truncated}


def _same(left: Any, right: Any) -> bool:
    # BSON equality is type-sensitive (1 != 1.0 != True as stored values), and
    # documents compare field order too.
    if type(left) is not type(right):
        return False
    if isinstance(left, Mapping):
        return list(left.items()) == list(right.items()) and all(
            _same(left[k], right[k]) for k in left
        )
    if isinstance(left, list):
        return len(left) == len(right) and all(
            _same(a, b) for a, b in zip(left, right, strict=True)
        )
    return bool(left == right)


def _diff_document(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    prefix: str,
    updated: dict[str, Any],
    removed: list[str],
    truncated: list[dict[str, Any]],
) -> None:
    for key in before:
        if key not in after:
            removed.append(prefix + key)
    for key, new in after.items():
        path = prefix + key
        if key not in before:
            updated[path] = new
            continue
        old = before[key]
        if _same(old, new):
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            _diff_document(old, new, path + ".", updated, removed, truncated)
        elif isinstance(old, list) and isinstance(new, list):
            _diff_array(old, new, path, updated, removed, truncated)
        else:
            updated[path] = new


def _diff_array(
    before: list[Any],
    after: list[Any],
    path: str,
    updated: dict[str, Any],
    removed: list[str],
    truncated: list[dict[str, Any]],
) -> None:
    if len(after) < len(before):
        truncated.append({"field": path, "newSize": len(after)})
    for index, new in enumerate(after):
        element = f"{path}.{index}"
        if index >= len(before):
            updated[element] = new
            continue
        old = before[index]
        if _same(old, new):
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            _diff_document(old, new, element + ".", updated, removed, truncated)
        else:
            updated[element] = new
