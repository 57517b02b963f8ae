"""``updateDescription`` for update events, computed from a document's before and after.

Follows the server's delta format: changed or added fields appear in
``updatedFields`` under their dotted path, nested documents are descended
into, arrays are compared element by element, and an array that only got
shorter is reported in ``truncatedArrays``. ``disambiguatedPaths`` maps each
reported path that a dotted string cannot name unambiguously to its parts,
as the server computes it (change_stream_document_diff_parser.cpp): a path
is ambiguous from its first field name that is numeric (past the first part)
or contains a dot; array indices are given as integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A path's parts: field names, and array indices as integers.
Path = tuple[str | int, ...]


def update_description(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The ``updateDescription`` of a change from *before* to *after*, with
    ``disambiguatedPaths`` (a stream shows it only with showExpandedEvents)."""
    delta = _Delta()
    delta.diff_document(before, after, ())
    return {
        "updatedFields": delta.updated,
        "removedFields": delta.removed,
        "truncatedArrays": delta.truncated,
        "disambiguatedPaths": delta.disambiguated,
    }


def _is_numeric(part: str) -> bool:
    # FieldRef::isNumericPathComponentStrict: digits only, no leading zero.
    return part.isascii() and part.isdigit() and (len(part) == 1 or part[0] != "0")


def _ambiguous(path: Path) -> bool:
    return any(
        isinstance(part, str) and ((index > 0 and _is_numeric(part)) or "." in part)
        for index, part in enumerate(path)
    )


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


@dataclass
class _Delta:
    updated: dict[str, Any] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    truncated: list[dict[str, Any]] = field(default_factory=list)
    disambiguated: dict[str, list[str | int]] = field(default_factory=dict)

    def _dotted(self, path: Path) -> str:
        dotted = ".".join(str(part) for part in path)
        if _ambiguous(path):
            self.disambiguated[dotted] = list(path)
        return dotted

    def diff_document(
        self, before: Mapping[str, Any], after: Mapping[str, Any], path: Path
    ) -> None:
        for key in before:
            if key not in after:
                self.removed.append(self._dotted((*path, key)))
        for key, new in after.items():
            if key not in before:
                self.updated[self._dotted((*path, key))] = new
                continue
            self._diff_value(before[key], new, (*path, key))

    def _diff_value(self, old: Any, new: Any, path: Path) -> None:
        if _same(old, new):
            return
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            self.diff_document(old, new, path)
        elif isinstance(old, list) and isinstance(new, list):
            self._diff_array(old, new, path)
        else:
            self.updated[self._dotted(path)] = new

    def _diff_array(self, before: list[Any], after: list[Any], path: Path) -> None:
        if len(after) < len(before):
            self.truncated.append({"field": self._dotted(path), "newSize": len(after)})
        for index, new in enumerate(after):
            element = (*path, index)
            if index >= len(before):
                self.updated[self._dotted(element)] = new
                continue
            old = before[index]
            if _same(old, new):
                continue
            if isinstance(old, Mapping) and isinstance(new, Mapping):
                self.diff_document(old, new, element)
            else:
                self.updated[self._dotted(element)] = new
