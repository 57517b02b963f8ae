"""A change stream's inclusion ``$project``, evaluated directly instead of by mongomock.

mongomock's aggregation deep-copies every event and walks a generic pipeline,
which made a stream with a ``$project`` several times slower than one without.
An inclusion projection (every value 1 or true, ``_id`` possibly 0 or false, plain
field paths) is common and simple: this builds its tree once and applies it to each
event. Any other ``$project`` still goes to mongomock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Tree = dict[str, "Tree | None"]
"""Included paths as nested names; None marks a whole field kept."""


class Inclusion:
    """An inclusion projection as mongomock evaluates it: kept fields in the document's
    own order, a path through an array applied to each of its documents (other
    elements, nested arrays too, dropped), a path through a scalar dropping the
    field, an emptied subdocument kept as {}."""

    def __init__(self, tree: Tree) -> None:
        self._tree = tree

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Inclusion | None:
        """The projection *spec* describes, or None when it is not a plain inclusion."""
        if not spec:
            return None
        tree: Tree = {}
        keep_id = True
        for path, value in spec.items():
            if not isinstance(path, str) or not path or path.startswith("$"):
                return None
            if path == "_id" and _is_number(value) and value == 0:
                keep_id = False
            elif not (_is_number(value) and value == 1) or not _add(tree, path.split(".")):
                return None
        if keep_id and "_id" not in tree:
            tree["_id"] = None
        return cls(tree) if tree else None

    def __call__(self, document: Mapping[str, Any]) -> dict[str, Any]:
        return _project(document, self._tree)


def _is_number(value: Any) -> bool:
    """1, 0 and their bool and float spellings, as a projection's values are written."""
    return isinstance(value, bool | int | float)


def _add(tree: Tree, parts: list[str]) -> bool:
    """Add a path to *tree*; False when it collides with another (the server refuses it)."""
    node = tree
    for depth, part in enumerate(parts):
        if not part:
            return False
        last = depth == len(parts) - 1
        if part in node:
            child = node[part]
            if child is None or last:
                return False
            node = child
        elif last:
            node[part] = None
        else:
            new: Tree = {}
            node[part] = new
            node = new
    return True


def _project(document: Mapping[str, Any], tree: Tree) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name, value in document.items():
        if name not in tree:
            continue
        sub = tree[name]
        if sub is None:
            kept[name] = value
        elif isinstance(value, Mapping):
            kept[name] = _project(value, sub)
        elif isinstance(value, list):
            kept[name] = _elements(value, sub)
    return kept


def _elements(values: list[Any], tree: Tree) -> list[Any]:
    return [_project(value, tree) for value in values if isinstance(value, Mapping)]
