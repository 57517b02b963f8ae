"""The replica set's bounded operation log, its cluster clock and resume tokens.

Every write appends one entry; change streams read the log from a position
and wait on it for new entries.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson.binary import Binary
from bson.timestamp import Timestamp

from mongosim.errors import CommandError

_TOKEN = re.compile(r"82([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{16})(0[012])")

EVENT = 0
INVALIDATE = 1
HIGH_WATER_MARK = 2


class ClusterClock:
    """Hands out strictly increasing cluster times: (unix seconds, counter)."""

    def __init__(self) -> None:
        self._last = Timestamp(int(time.time()), 0)

    @property
    def now(self) -> Timestamp:
        """The last time handed out (the cluster's operationTime)."""
        return self._last

    def tick(self) -> Timestamp:
        """A new time, later than every time handed out before."""
        seconds = int(time.time())
        if seconds > self._last.time:
            self._last = Timestamp(seconds, 1)
        else:
            self._last = Timestamp(self._last.time, self._last.inc + 1)
        return self._last


@dataclass(frozen=True, slots=True)
class ResumeToken:
    """A position in the log, relative to entry ``seq``.

    ``kind`` says how much of that entry's events a stream has seen: its first
    event (EVENT), also the invalidate that follows it (INVALIDATE), or all of
    it, as a high-water mark returned when a batch ends without events
    (HIGH_WATER_MARK). Encoded as ``{_data: hex}``, hex strings that sort in
    log order like the real server's tokens.
    """

    ts: Timestamp
    seq: int
    kind: int = EVENT

    @property
    def invalidate(self) -> bool:
        """Whether this is the token of an invalidate event."""
        return self.kind == INVALIDATE

    @property
    def events_seen(self) -> int | None:
        """How many of entry ``seq``'s events precede this position; None: all of them."""
        return None if self.kind == HIGH_WATER_MARK else self.kind + 1

    def document(self) -> dict[str, str]:
        """The token as clients see it."""
        return {"_data": f"82{self.ts.time:08X}{self.ts.inc:08X}{self.seq:016X}{self.kind:02X}"}

    @classmethod
    def parse(cls, value: Any) -> ResumeToken:
        """Decode a token a client sent back.

        Raises CommandError 260 InvalidResumeToken if it is not one of ours.
        """
        data = value.get("_data") if isinstance(value, dict) else None
        match = _TOKEN.fullmatch(data) if isinstance(data, str) else None
        if match is None:
            raise CommandError(260, f"invalid resume token: {value!r}")
        secs, inc, seq, kind = match.groups()
        return cls(Timestamp(int(secs, 16), int(inc, 16)), int(seq, 16), int(kind, 16))


@dataclass(frozen=True, slots=True)
class OplogEntry:
    """One write, as the change stream needs it.

    ``op`` is insert, update, replace, delete, drop, rename, dropDatabase, create,
    createIndexes, dropIndexes, modify (collMod) or noop.
    ``pre_image``/``post_image`` are kept only when the collection had
    changeStreamPreAndPostImages enabled at the time of the write.
    ``uuid`` is the collection's UUID (None for dropDatabase and views),
    ``description`` what a catalog change did (its operationDescription, less
    a rename's ``to``), ``before`` a collMod's stateBeforeChange, and
    ``ns_type`` "view" when the entry creates or drops a view.
    """

    seq: int
    ts: Timestamp
    wall: datetime
    op: str
    db: str
    coll: str | None = None
    document_key: dict[str, Any] | None = None
    document: dict[str, Any] | None = None
    update_description: dict[str, Any] | None = None
    pre_image: dict[str, Any] | None = None
    post_image: dict[str, Any] | None = None
    to: tuple[str, str] | None = None
    uuid: Binary | None = None
    description: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    ns_type: str = "collection"

    @property
    def token(self) -> ResumeToken:
        """The token of this entry's (first) event."""
        return ResumeToken(self.ts, self.seq)

    @property
    def high_water_mark(self) -> ResumeToken:
        """The position after everything this entry produced."""
        return ResumeToken(self.ts, self.seq, HIGH_WATER_MARK)


class Oplog:
    """A bounded, append-only log of entries with contiguous sequence numbers.

    Holds at most *capacity* entries; older ones are forgotten, and resuming
    from a forgotten position fails with code 286 ChangeStreamHistoryLost.
    Must be used from a single event loop thread.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("oplog capacity must be at least 1")
        self._capacity = capacity
        self._clock = ClusterClock()
        self._entries: list[OplogEntry] = []
        self._head = 0
        self._appended = asyncio.Event()
        self.append("noop", "")

    @property
    def clock(self) -> ClusterClock:
        """The cluster clock every entry's ``ts`` comes from."""
        return self._clock

    @property
    def latest(self) -> OplogEntry:
        """The newest entry (the log is never empty)."""
        return self._entries[-1]

    @property
    def oldest(self) -> OplogEntry:
        """The oldest entry still retained."""
        return self._entries[self._head]

    def append(self, op: str, db: str, **fields: Any) -> OplogEntry:
        """Record one write and wake every change stream waiting for news."""
        entry = OplogEntry(
            seq=self._entries[-1].seq + 1 if self._entries else 0,
            ts=self._clock.tick(),
            wall=datetime.now(UTC),
            op=op,
            db=db,
            **fields,
        )
        self._entries.append(entry)
        if len(self._entries) - self._head > self._capacity:
            self._forget(1)
        self._appended.set()
        self._appended = asyncio.Event()
        return entry

    def truncate(self) -> None:
        """Forget all history: every position handed out so far becomes too old."""
        self.append("noop", "")
        self._forget(len(self._entries) - self._head - 1)

    def _forget(self, count: int) -> None:
        self._head += count
        # Compact only once the dead prefix is as large as the live part, so
        # trimming costs amortised O(1) per append.
        if self._head >= self._capacity:
            del self._entries[: self._head]
            self._head = 0

    def check_available(self, token: ResumeToken) -> None:
        """Raise unless the log still holds everything after *token*.

        Raises CommandError 286 ChangeStreamHistoryLost if the token's entry was
        forgotten, and 280 ChangeStreamFatalError if it was never written.
        """
        if token.seq > self.latest.seq or (
            token.seq >= self.oldest.seq and self.entry(token.seq).ts != token.ts
        ):
            raise CommandError(280, "cannot resume stream; the resume token was not found")
        if token.seq < self.oldest.seq:
            raise CommandError(
                286,
                "Resume of change stream was not possible, as the resume point may "
                "no longer be in the oplog.",
                labels=["NonResumableChangeStreamError"],
            )

    def position_at(self, ts: Timestamp) -> int:
        """The seq after which entries at or later than cluster time *ts* begin.

        Raises CommandError 286 if *ts* is older than the oldest retained entry.
        """
        if ts < self.oldest.ts:
            raise CommandError(
                286,
                "Resume of change stream was not possible, as the resume point may "
                "no longer be in the oplog.",
                labels=["NonResumableChangeStreamError"],
            )
        for entry in reversed(self._entries[self._head :]):
            if entry.ts < ts:
                return entry.seq
        return self.oldest.seq - 1

    def entry(self, seq: int) -> OplogEntry:
        """The retained entry with sequence number *seq*."""
        return self._entries[self._head + seq - self.oldest.seq]

    def after(self, seq: int) -> Iterator[OplogEntry]:
        """Retained entries with a sequence number greater than *seq*, oldest first."""
        start = self._head + max(seq + 1 - self.oldest.seq, 0)
        for index in range(start, len(self._entries)):
            yield self._entries[index]

    async def wait_after(self, seq: int, max_wait: float) -> bool:
        """Wait up to *max_wait* seconds for an entry newer than *seq*.

        Returns whether one exists. Safe to cancel.
        """
        if self.latest.seq > seq:
            return True
        try:
            await asyncio.wait_for(self._appended.wait(), max_wait)
        except TimeoutError:
            return self.latest.seq > seq
        return True
