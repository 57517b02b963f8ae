"""What the service holding a pipeline's lease runs, recorded for `status` on any machine."""

from __future__ import annotations

from redis.asyncio import Redis

from checkpoints.keys import Keys
from checkpoints.stats import as_text


class ServiceRecord:
    """The embedder fingerprint (model, weights digest, inference path) of the service
    that took the lease, under the owner it took it as: a record left by an earlier
    holder is not shown as the current one's."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def save(self, owner: str, fingerprint: str) -> None:
        await self._redis.hset(
            self._keys.service, mapping={"owner": owner, "fingerprint": fingerprint}
        )

    async def fingerprint(self, owner: str) -> str | None:
        """The fingerprint *owner* recorded, or None when it recorded none."""
        recorded_owner, fingerprint = await self._redis.hmget(
            self._keys.service, ["owner", "fingerprint"]
        )
        if recorded_owner is None or fingerprint is None or as_text(recorded_owner) != owner:
            return None
        return as_text(fingerprint)
