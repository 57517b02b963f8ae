"""Server-side scripts: the atomic, fence-checked writes of the checkpoints package."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from core.errors import LeaseLost

# Shared by every fenced script: KEYS[1] is the fence key, ARGV[1] the caller's fence.
# Compared as strings because INCR stores the canonical decimal form.
FENCE_CHECK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
"""


class LuaScript:
    """A Lua script run by EVALSHA, falling back to EVAL when Redis does not cache it
    (first use, or after a restart or SCRIPT FLUSH); either way one round trip
    and one atomic execution on the server."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, redis: Redis, keys: Sequence[str], args: Sequence[EncodableT]
    ) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # EVAL also caches the script, so the next call's EVALSHA hits.
            return await redis.eval(self.source, len(keys), *keys, *args)


def raise_unless_fenced(result: int, fence: int) -> None:
    """Turn a fenced script's 0 (the fence check failed, nothing written) into LeaseLost."""
    if not result:
        raise LeaseLost(f"fence {fence} is not the current lease's fence")
