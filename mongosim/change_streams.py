"""Change-stream cursors: ``aggregate`` with a leading ``$changeStream`` stage.

A cursor reads the oplog from its position, turns entries into events,
runs the trailing pipeline on them and returns batches; ``getMore`` waits
for new entries up to its maxTimeMS.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from mongosim.change_events import EventFactory, Scope, StreamModes
from mongosim.cursors import MAX_BATCH_BYTES
from mongosim.engine import compatible_stage, matches, run_pipeline
from mongosim.errors import RETRYABLE_CODES, CommandError
from mongosim.oplog import HIGH_WATER_MARK, ResumeToken
from mongosim.projection import Inclusion
from mongosim.storage import Storage

# Stages the server allows after $changeStream, and the rewrite of those
# mongomock only knows under another name.
ALLOWED_STAGES = frozenset(
    {
        "$match",
        "$project",
        "$addFields",
        "$set",
        "$unset",
        "$replaceRoot",
        "$replaceWith",
        "$redact",
    }
)
KNOWN_STAGES = ALLOWED_STAGES | frozenset(
    {
        "$group",
        "$sort",
        "$limit",
        "$skip",
        "$lookup",
        "$unwind",
        "$out",
        "$merge",
        "$count",
        "$facet",
        "$bucket",
        "$bucketAuto",
        "$sample",
        "$graphLookup",
        "$sortByCount",
        "$geoNear",
        "$indexStats",
        "$collStats",
        "$currentOp",
        "$listSessions",
        "$densify",
        "$fill",
        "$setWindowFields",
        "$unionWith",
        "$documents",
        "$changeStreamSplitLargeEvent",
    }
)
CHANGE_STREAM_OPTIONS = frozenset(
    {
        "fullDocument",
        "fullDocumentBeforeChange",
        "resumeAfter",
        "startAfter",
        "startAtOperationTime",
        "allChangesForCluster",
        "showExpandedEvents",
        "allowToRunOnConfigDB",
        "allowToRunOnSystemNS",
    }
)
DEFAULT_AWAIT_SECONDS = 1.0
# How long one scan of the oplog may hold the event loop before yielding, so
# a stream with a costly or rejecting pipeline cannot stall other connections.
SCAN_SLICE_SECONDS = 0.02
RESUMABLE_LABEL = "ResumableChangeStreamError"


def change_stream_stage(stage: Mapping[str, Any]) -> dict[str, Any]:
    """*stage* in the form mongomock evaluates with the server's meaning.

    Raises CommandError 40324 for an unknown stage and 20 IllegalOperation for
    a stage the server does not allow in a change stream.
    """
    if len(stage) != 1:
        raise CommandError(
            40323, "A pipeline stage specification object must contain exactly one field."
        )
    name = next(iter(stage))
    if name not in KNOWN_STAGES:
        raise CommandError(40324, f"Unrecognized pipeline stage name: '{name}'")
    if name not in ALLOWED_STAGES:
        raise CommandError(20, f"{name} is not permitted in a $changeStream pipeline")
    return compatible_stage(stage)


def _compiled(stage: dict[str, Any]) -> dict[str, Any] | Inclusion:
    """*stage*, or the Inclusion that evaluates it when it is an inclusion ``$project``."""
    spec = stage.get("$project")
    inclusion = Inclusion.of(spec) if isinstance(spec, Mapping) else None
    return stage if inclusion is None else inclusion


class ChangeStreamCursor:
    """One open change stream: its position in the oplog and its trailing pipeline."""

    def __init__(
        self,
        storage: Storage,
        namespace: str,
        scope: Scope,
        options: Mapping[str, Any],
        stages: list[Mapping[str, Any]],
    ) -> None:
        """Open a stream at the position *options* names (now, by default).

        Raises CommandError for invalid options or stages, and 286 / 280 / 260
        for a resume point the oplog cannot serve.
        """
        unknown = set(options) - CHANGE_STREAM_OPTIONS
        if unknown:
            field = sorted(unknown)[0]
            raise CommandError(40415, f"BSON field '$changeStream.{field}' is an unknown field.")
        modes = StreamModes.parse(options)
        self.namespace = namespace
        self._storage = storage
        self._oplog = storage.oplog
        self._factory = EventFactory(storage, scope, modes)
        self._stages = [_compiled(change_stream_stage(stage)) for stage in stages]
        self._database = storage.database(scope.db or "admin")
        self._pending: deque[dict[str, Any]] = deque()
        self._seq, self._skip, start = self._start(options)
        self._ts = start.ts
        self._position = start.document()
        self.exhausted = False
        self.last_used = time.monotonic()

    def _start(self, options: Mapping[str, Any]) -> tuple[int, int, ResumeToken]:
        """The entry to continue after, how many of the next entry's events to skip,
        and the position to report before any event is returned."""
        chosen = [
            key for key in ("resumeAfter", "startAfter", "startAtOperationTime") if key in options
        ]
        if len(chosen) > 1:
            raise CommandError(
                40674, "Only one type of resume option is allowed, but multiple were found."
            )
        if not chosen:
            return self._oplog.latest.seq, 0, self._oplog.latest.high_water_mark
        key = chosen[0]
        if key == "startAtOperationTime":
            ts = options[key]
            if not isinstance(ts, Timestamp):
                raise CommandError(14, "startAtOperationTime must be a Timestamp")
            seq = self._oplog.position_at(ts)
            if seq >= self._oplog.oldest.seq:
                return seq, 0, self._oplog.entry(seq).high_water_mark
            return seq, 0, ResumeToken(self._oplog.oldest.ts, seq, HIGH_WATER_MARK)
        token = ResumeToken.parse(options[key])
        if token.invalidate and key == "resumeAfter":
            raise CommandError(
                260,
                "Attempting to resume a change stream using 'resumeAfter' is not allowed from "
                "an invalidate notification.",
            )
        self._oplog.check_available(token)
        seen = token.events_seen
        if seen is None:
            return token.seq, 0, token
        # Entry token.seq is revisited, skipping the events already delivered.
        return token.seq - 1, seen, token

    @property
    def resume_token(self) -> dict[str, Any]:
        """The postBatchResumeToken: where a resumed stream must continue."""
        return self._position

    async def next_batch(self, batch_size: int | None, max_time: float) -> tuple[list[Any], bool]:
        """Events after the current position, waiting up to *max_time* seconds for one.

        Returns the batch and whether the stream has ended (after invalidate).
        Raises CommandError 286 if the oplog rolled past the position; errors
        from the server's own retryable set carry the ResumableChangeStreamError label.
        """
        self.last_used = time.monotonic()
        deadline = time.monotonic() + max_time
        while True:
            try:
                batch = self._collect(batch_size)
            except CommandError as exc:
                if exc.code in RETRYABLE_CODES:
                    exc.labels.append(RESUMABLE_LABEL)
                raise
            remaining = deadline - time.monotonic()
            if batch or self.exhausted or remaining <= 0:
                self.last_used = time.monotonic()
                return batch, self.exhausted
            if self._oplog.latest.seq > self._seq:
                await asyncio.sleep(0)  # more log to scan; let other connections go first
            else:
                await self._oplog.wait_after(self._seq, remaining)

    def _collect(self, batch_size: int | None) -> list[RawBSONDocument]:
        if self._seq + 1 < self._oplog.oldest.seq and not self._pending:
            raise CommandError(
                286,
                "Resume of change stream was not possible, as the resume point may no longer "
                "be in the oplog.",
                labels=["NonResumableChangeStreamError"],
            )
        limit = batch_size if batch_size else None
        batch: list[RawBSONDocument] = []
        size = 0
        slice_end = time.monotonic() + SCAN_SLICE_SECONDS
        while limit is None or len(batch) < limit:
            if not self._pending:
                self._refill(slice_end)
                if not self._pending:
                    break
            event = self._pending[0]
            raw = RawBSONDocument(bson.encode(event))
            if batch and size + len(raw.raw) > MAX_BATCH_BYTES:
                break
            self._pending.popleft()
            batch.append(raw)
            size += len(raw.raw)
            self._position = event["_id"]
            if self._is_own_invalidate(event):
                self.exhausted = True
                return batch
        if not self._pending:
            self._position = ResumeToken(self._ts, self._seq, HIGH_WATER_MARK).document()
        return batch

    def _refill(self, slice_end: float) -> None:
        """Scan entries until one yields events, or until monotonic time *slice_end*."""
        for entry in self._oplog.after(self._seq):
            if time.monotonic() > slice_end:
                break
            events = self._factory.events(entry)[self._skip :]
            self._skip = 0
            self._seq, self._ts = entry.seq, entry.ts
            for event in events:
                shaped = self._run_pipeline(event)
                if shaped is not None:
                    self._pending.append(shaped)
            if self._pending:
                break

    @staticmethod
    def _is_own_invalidate(event: Mapping[str, Any]) -> bool:
        token = event.get("_id")
        data = token.get("_data") if isinstance(token, Mapping) else None
        return isinstance(data, str) and data.endswith("01")

    def _run_pipeline(self, event: dict[str, Any]) -> dict[str, Any] | None:
        if not self._stages:
            return event
        token = event["_id"]
        shaped = event
        for stage in self._stages:
            if isinstance(stage, Inclusion):
                shaped = stage(shaped)
                continue
            spec = stage.get("$match")
            if spec is not None:
                if not matches(spec, shaped):
                    return None
                continue
            results = run_pipeline([copy.deepcopy(shaped)], self._database, [stage])
            if not results:
                return None
            shaped = results[0]
        if shaped.get("_id") != token:
            raise CommandError(
                280,
                "Encountered an event whose _id field, which contains the resume token, was "
                "modified by the pipeline. Modifying the _id field of an event makes it "
                "impossible to resume the stream from that point. Only transformations that "
                "retain the unmodified _id field are allowed.",
                labels=["NonResumableChangeStreamError"],
            )
        return shaped
