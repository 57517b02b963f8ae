"""CDC_EMBEDDING_PRECISION=auto: choose the inference path once, and keep it.

The fastest path that passes the quality gate wins, but a path already
recorded (on the Milvus collection, whose vectors it made, or in the choice
file of an earlier start) is kept as long as it still passes the gate here:
timing noise must never change the fingerprint, since another fingerprint
means re-embedding the whole index (and the store refuses to start on a
collection made by another one). The collection's path binds: when it cannot
run here, or fails the gate here, start-up stops and says why, instead of
choosing a path whose vectors the collection would refuse.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import structlog

from indexer.inference import PATHS, Encoder, InferencePath, PathUnavailable
from indexer.quality import Verdict

log = structlog.get_logger(__name__)

CHOICE_FILE = "choice.json"


@dataclass(frozen=True)
class Trial:
    """One path's run over the gate set: its speed and its verdict."""

    path: InferencePath
    rate: float
    verdict: Verdict


@dataclass(frozen=True)
class Choice:
    path: InferencePath
    reason: str
    trials: tuple[Trial, ...]


class Recorded(NamedTuple):
    """A path chosen before, and where it was recorded."""

    where: str
    path: str
    binding: bool = False
    """Vectors the path made exist (on the Milvus collection): any other path would
    mix with them, so this one runs here or start-up stops."""


Attempt = Callable[[InferencePath], tuple[Trial, Encoder]]
"""Build a path's encoder and run it over the gate set; raises PathUnavailable."""


def choose(attempt: Attempt, recorded: Sequence[Recorded]) -> tuple[Choice, Encoder]:
    """The path to run and its encoder.

    *recorded* lists the paths to keep, most authoritative first; the first that
    still loads and passes the gate is chosen without measuring the others.
    Otherwise every path is tried and the fastest that passes wins. Raises
    PathUnavailable when a binding record's path cannot run or fails the gate
    here, or when no path passes (fp32, the reference, always does unless it
    cannot run at all)."""
    for record in recorded:
        path = as_path(record.path)
        if path is None:
            log.warning("inference_path_unknown", recorded=record.path, where=record.where)
            continue
        outcome = _try(attempt, path)
        if isinstance(outcome, PathUnavailable):
            if record.binding:
                raise _bound_to(
                    record,
                    f"cannot run here ({outcome})",
                    f"Run this pipeline on machines where {record.path} runs (the bf16 paths "
                    "need a CPU with bf16 instructions, AVX-512 BF16 or AMX: in Kubernetes, "
                    "a node affinity on that CPU feature)",
                )
            continue
        trial, encoder = outcome
        if trial.verdict.passed:
            return Choice(path, f"recorded {record.where}", (trial,)), encoder
        if record.binding:
            raise _bound_to(
                record,
                f"fails the quality gate here ({trial.verdict.describe()})",
                f"Keep serving this index as it is with CDC_EMBEDDING_PRECISION={record.path} "
                "(a path named explicitly is not gated)",
            )
        log.warning(
            "recorded_inference_path_fails_gate",
            path=path,
            where=record.where,
            gate=trial.verdict.describe(),
        )
    trials: list[Trial] = []
    best: tuple[Trial, Encoder] | None = None
    for path in PATHS:
        outcome = _try(attempt, path)
        if isinstance(outcome, PathUnavailable):
            continue
        trial, encoder = outcome
        trials.append(trial)
        if trial.verdict.passed and (best is None or trial.rate > best[0].rate):
            best = outcome
    if best is None:
        raise PathUnavailable("no inference path passes the quality gate on this machine")
    return Choice(best[0].path, "fastest that passes the gate", tuple(trials)), best[1]


def _bound_to(record: Recorded, why: str, remedy: str) -> PathUnavailable:
    """Why start-up stops when the collection's path cannot serve here: *why*, then
    *remedy* and the other way on, a new collection."""
    return PathUnavailable(
        f"the vectors {record.where} were made by the {record.path} path, which {why}; "
        f"any other path would mix its vectors with them. {remedy}, or index into a new "
        "collection (CDC_MILVUS_COLLECTION) with a path this machine runs, chosen by "
        "CDC_EMBEDDING_PRECISION=auto or named"
    )


def as_path(name: str) -> InferencePath | None:
    return name if name in PATHS else None


def read_choice(directory: Path) -> str | None:
    """The path an earlier start chose with this cache directory, if it recorded one."""
    try:
        data = json.loads((directory / CHOICE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = data.get("path") if isinstance(data, dict) else None
    return path if isinstance(path, str) else None


def save_choice(directory: Path, choice: Choice) -> None:
    """Record *choice* for the next start; an unwritable directory is logged, not fatal
    (the collection's fingerprint still keeps the choice)."""
    record = {
        "path": choice.path,
        "reason": choice.reason,
        "trials": {
            t.path: {
                "texts_per_second": round(t.rate, 1),
                "min_cosine": round(t.verdict.min_cosine, 5),
                "agreement": round(t.verdict.agreement, 4),
            }
            for t in choice.trials
        },
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CHOICE_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    except OSError as err:
        log.warning("inference_choice_not_saved", directory=str(directory), error=str(err))


def _try(attempt: Attempt, path: InferencePath) -> tuple[Trial, Encoder] | PathUnavailable:
    """The path's trial and encoder, or why it cannot run here."""
    try:
        trial, encoder = attempt(path)
    except PathUnavailable as err:
        log.info("inference_path_skipped", path=path, reason=str(err))
        return err
    log.info(
        "inference_path_measured",
        path=path,
        texts_per_second=round(trial.rate, 1),
        min_cosine=round(trial.verdict.min_cosine, 5),
        agreement=round(trial.verdict.agreement, 4),
        passed=trial.verdict.passed,
    )
    return trial, encoder
