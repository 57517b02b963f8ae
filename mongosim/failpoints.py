"""``configureFailPoint``: the server's test hooks ``failCommand`` and
``failGetMoreAfterCursorCheckout``, with their ``mode`` semantics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mongosim.errors import CommandError

SUPPORTED = frozenset({"failCommand", "failGetMoreAfterCursorCheckout"})


@dataclass(slots=True)
class FailPoint:
    """One armed fail point: how often it fires and what it does."""

    name: str
    data: dict[str, Any]
    remaining: int | None  # None: always on
    skip: int = 0
    hits: int = field(default=0)

    def fire(self) -> bool:
        """Count one matching occurrence; returns whether the fail point acts on it."""
        if self.skip > 0:
            self.skip -= 1
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
        self.hits += 1
        return True

    @property
    def spent(self) -> bool:
        """Whether a ``times`` fail point has fired all its times."""
        return self.remaining is not None and self.remaining <= 0


@dataclass(frozen=True, slots=True)
class Failure:
    """What a fired fail point makes the server do to the command."""

    close_connection: bool = False
    block_seconds: float = 0.0
    error: CommandError | None = None
    write_concern_error: dict[str, Any] | None = None
    write_concern_labels: tuple[str, ...] | None = None  # None: the server decides


class FailPoints:
    """The fail points currently armed in the deployment."""

    def __init__(self) -> None:
        self._points: dict[str, FailPoint] = {}

    def configure(self, command: Mapping[str, Any]) -> int:
        """Apply a ``configureFailPoint`` command; returns the previous hit count.

        Raises CommandError 2 BadValue for an unknown fail point or mode.
        """
        name = command.get("configureFailPoint")
        if name not in SUPPORTED:
            raise CommandError(
                2,
                f"Cannot find failpoint named {name!r} (mongosim supports "
                f"{', '.join(sorted(SUPPORTED))})",
            )
        mode = command.get("mode")
        data = command.get("data") or {}
        if not isinstance(data, Mapping):
            raise CommandError(2, "fail point data must be a document")
        previous = self._points.pop(name, None)
        if mode == "off":
            pass
        elif mode == "alwaysOn":
            self._points[name] = FailPoint(name, dict(data), None)
        elif isinstance(mode, Mapping) and "times" in mode:
            self._points[name] = FailPoint(name, dict(data), int(mode["times"]))
        elif isinstance(mode, Mapping) and "skip" in mode:
            self._points[name] = FailPoint(name, dict(data), None, skip=int(mode["skip"]))
        else:
            raise CommandError(2, f"unsupported fail point mode: {mode!r}")
        return previous.hits if previous else 0

    def for_command(self, command_name: str, app_name: str | None) -> Failure | None:
        """What ``failCommand`` does to *command_name* from client *app_name*, if anything."""
        point = self._points.get("failCommand")
        if point is None:
            return None
        data = point.data
        if command_name not in data.get("failCommands", ()):
            return None
        wanted_app = data.get("appName")
        if wanted_app is not None and wanted_app != app_name:
            return None
        if not point.fire():
            return None
        if point.spent:
            del self._points["failCommand"]
        return _failure(data)

    def after_getmore_checkout(self) -> Failure | None:
        """What ``failGetMoreAfterCursorCheckout`` does to a getMore, if anything."""
        point = self._points.get("failGetMoreAfterCursorCheckout")
        if point is None or not point.fire():
            return None
        if point.spent:
            del self._points["failGetMoreAfterCursorCheckout"]
        return _failure(point.data)


def _failure(data: Mapping[str, Any]) -> Failure:
    block = 0.0
    if data.get("blockConnection"):
        block = float(data.get("blockTimeMS", 0)) / 1000.0
    error = None
    if "errorCode" in data:
        error = CommandError(
            int(data["errorCode"]),
            "Failing command via 'failCommand' failpoint",
            labels=data.get("errorLabels") or (),
            labels_fixed="errorLabels" in data,
        )
    wce = data.get("writeConcernError")
    return Failure(
        close_connection=bool(data.get("closeConnection", False)),
        block_seconds=block,
        error=error,
        write_concern_error=dict(wce) if isinstance(wce, Mapping) else None,
        write_concern_labels=tuple(data["errorLabels"]) if "errorLabels" in data else None,
    )
