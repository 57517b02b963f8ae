"""Which document fields a pipeline depends on, and whether a change touched them.

Paths are compared component by component with array indexes dropped
("sections.0.text" is "sections.text"), so a change to an array element, to
a parent of a configured path or to a child of one all count as touching it.
Dropping indexes can only make two paths look related when they are not,
never the reverse: a change is never wrongly judged irrelevant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_LOGICAL_OPERATORS = frozenset({"$and", "$or", "$nor"})


def _normalized(components: Iterable[str]) -> tuple[str, ...]:
    return tuple(part for part in components if not part.isdigit())


def filter_paths(query: Mapping[str, Any]) -> set[str]:
    """The field paths *query* reads. *query* must be one cdc.query.Query accepts:
    every field it reads is then named by a key (no $expr, $where or $text)."""
    paths: set[str] = set()
    for key, value in query.items():
        if key in _LOGICAL_OPERATORS:
            for clause in value:
                paths |= filter_paths(clause)
        elif not key.startswith("$"):
            paths.add(key)
    return paths


def _before_index(components: Sequence[str]) -> tuple[str, ...]:
    for position, part in enumerate(components):
        if part.isdigit():
            return tuple(components[:position])
    return tuple(components)


class FieldSet:
    """A set of dotted paths a pipeline reads from its documents."""

    def __init__(self, paths: Iterable[str]) -> None:
        split = [path.split(".") for path in paths]
        self._paths = frozenset(_normalized(parts) for parts in split)
        self._roots = frozenset(_before_index(parts) for parts in split)

    def touched_by(self, components: Sequence[str]) -> bool:
        """Whether a change at the path *components* can alter a value at one of these paths."""
        changed = _normalized(components)
        return any(
            changed[: len(path)] == path or path[: len(changed)] == changed for path in self._paths
        )

    def projection(self) -> list[str] | None:
        """These paths as MongoDB projection keys: cut at the first array index
        (a numeric projection key means a field name, not an index), with
        every path under another one dropped (MongoDB rejects a projection
        holding both "a" and "a.b"). None when a path starts with an index:
        only the whole document then holds it."""
        if () in self._roots:
            return None
        roots = sorted(self._roots, key=len)
        kept: list[tuple[str, ...]] = []
        for path in roots:
            if not any(path[: len(root)] == root for root in kept):
                kept.append(path)
        return sorted(".".join(path) for path in kept)


def changed_paths(update_description: Mapping[str, Any]) -> list[Sequence[str]]:
    """Every field path an update's ``updateDescription`` reports as changed, as components.

    Field names holding dots or digits are taken from ``disambiguatedPaths``
    when the server sent it (MongoDB 6.1+ with showExpandedEvents)."""
    exact: Mapping[str, Sequence[Any]] = update_description.get("disambiguatedPaths") or {}
    names: list[str] = list(update_description.get("updatedFields") or {})
    names += update_description.get("removedFields") or []
    names += [truncated["field"] for truncated in update_description.get("truncatedArrays") or []]
    return [
        [str(part) for part in exact[name]] if name in exact else name.split(".") for name in names
    ]
