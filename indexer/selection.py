"""CDC_EMBEDDING_PRECISION=auto: choose the inference path once, and keep it.

The fastest path that passes the quality gate wins, but a path already
recorded (on the Milvus collection, whose vectors it made, or in the choice
file of an earlier start) is kept as long as it still passes the gate here:
timing noise must never change the fingerprint, since another fingerprint
means re-embedding the whole index (and the store refuses to start on a
collection made by another one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


Attempt = Callable[[InferencePath], tuple[Trial, Encoder]]
"""Build a path's encoder and run it over the gate set; raises PathUnavailable."""


def choose(attempt: Attempt, recorded: Sequence[tuple[str, str]]) -> tuple[Choice, Encoder]:
    """The path to run and its encoder.

    *recorded* lists (where, path) pairs to keep, most authoritative first; the
    first that still loads and passes the gate is chosen without measuring
    the others. Otherwise every path is tried and the fastest that passes
    wins. Raises PathUnavailable when no path passes (fp32, the reference,
    always does unless it cannot run at all)."""
    for where, name in recorded:
        path = as_path(name)
        if path is None:
            log.warning("inference_path_unknown", recorded=name, where=where)
            continue
        outcome = _try(attempt, path)
        if outcome is None:
            continue
        trial, encoder = outcome
        if trial.verdict.passed:
            return Choice(path, f"recorded {where}", (trial,)), encoder
        log.warning(
            "recorded_inference_path_fails_gate",
            path=path,
            where=where,
            gate=trial.verdict.describe(),
        )
    trials: list[Trial] = []
    best: tuple[Trial, Encoder] | None = None
    for path in PATHS:
        outcome = _try(attempt, path)
        if outcome is None:
            continue
        trial, encoder = outcome
        trials.append(trial)
        if trial.verdict.passed and (best is None or trial.rate > best[0].rate):
            best = outcome
    if best is None:
        raise PathUnavailable("no inference path passes the quality gate on this machine")
    return Choice(best[0].path, "fastest that passes the gate", tuple(trials)), best[1]


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


def _try(attempt: Attempt, path: InferencePath) -> tuple[Trial, Encoder] | None:
    try:
        trial, encoder = attempt(path)
    except PathUnavailable as err:
        log.info("inference_path_skipped", path=path, reason=str(err))
        return None
    log.info(
        "inference_path_measured",
        path=path,
        texts_per_second=round(trial.rate, 1),
        min_cosine=round(trial.verdict.min_cosine, 5),
        agreement=round(trial.verdict.agreement, 4),
        passed=trial.verdict.passed,
    )
    return trial, encoder
