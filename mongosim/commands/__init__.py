"""Every command mongosim answers, by name."""

from __future__ import annotations

from mongosim.commands import aggregation, catalog, crud, handshake
from mongosim.context import CommandSpec

COMMANDS: dict[str, CommandSpec] = {
    **handshake.HANDLERS,
    **catalog.HANDLERS,
    **crud.HANDLERS,
    **aggregation.HANDLERS,
}
