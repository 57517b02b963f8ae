"""How auto chooses an inference path: the fastest that passes the gate, unless a
recorded path still passes (so timing noise never changes the fingerprint); the
collection's path runs or start-up stops.

The attempts here are stand-ins for measured paths: what is tested is the
decision; tests/indexer/test_quality.py runs the real paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.inference import Encoder, InferencePath, PathUnavailable
from indexer.quality import Verdict
from indexer.selection import Choice, Recorded, Trial, choose, read_choice, save_choice

PASS = Verdict(0.999, 1.0)
FAIL = Verdict(0.98, 0.96)


class Machine:
    """Measured rates and verdicts per path; a path missing from both is unavailable."""

    def __init__(self, rates: dict[InferencePath, float], failing: set[str] = frozenset()) -> None:
        self.rates = rates
        self.failing = failing
        self.attempted: list[InferencePath] = []

    def __call__(self, path: InferencePath) -> tuple[Trial, Encoder]:
        self.attempted.append(path)
        if path not in self.rates:
            raise PathUnavailable("openvino is not installed")
        verdict = FAIL if path in self.failing else PASS
        return Trial(path, self.rates[path], verdict), lambda texts, size: np.zeros((1, 1))


RATES: dict[InferencePath, float] = {
    "fp32": 40.0,
    "bf16": 100.0,
    "onnx-fp32": 60.0,
    "onnx-int8": 150.0,
}


def test_fastest_passing_path_wins_and_failures_and_missing_paths_are_skipped() -> None:
    machine = Machine(RATES, failing={"onnx-int8"})
    choice, _ = choose(machine, [])
    assert choice.path == "bf16"
    assert choice.reason == "fastest that passes the gate"
    assert [t.path for t in choice.trials] == ["fp32", "bf16", "onnx-fp32", "onnx-int8"]
    assert "openvino-bf16" in machine.attempted


def test_recorded_path_is_kept_without_measuring_the_others() -> None:
    machine = Machine(RATES)
    choice, _ = choose(machine, [Recorded("on the Milvus collection", "onnx-fp32", binding=True)])
    assert choice.path == "onnx-fp32"
    assert choice.reason == "recorded on the Milvus collection"
    assert machine.attempted == ["onnx-fp32"]


def test_a_saved_choice_that_fails_or_cannot_run_here_gives_way() -> None:
    machine = Machine(RATES, failing={"onnx-int8"})
    recorded = [
        Recorded("in choice.json", "onnx-int8"),
        Recorded("in choice.json", "openvino-bf16"),
    ]
    choice, _ = choose(machine, recorded)
    assert choice.path == "bf16"
    assert machine.attempted[:2] == ["onnx-int8", "openvino-bf16"]


@pytest.mark.parametrize(
    ("machine", "why", "remedy"),
    [
        (Machine(RATES), r"cannot run here \(openvino is not installed\)", "node affinity"),
        (
            Machine({**RATES, "openvino-bf16": 200.0}, failing={"openvino-bf16"}),
            "fails the quality gate here",
            "CDC_EMBEDDING_PRECISION=openvino-bf16",
        ),
    ],
)
def test_the_collections_path_runs_here_or_start_up_stops_saying_why(
    machine: Machine, why: str, remedy: str
) -> None:
    """Another path's vectors would be mixed with the collection's (the store refuses
    them later, with no word of the cause): stop at once, name it and the ways on."""
    recorded = [
        Recorded("on the Milvus collection", "openvino-bf16", binding=True),
        Recorded("in choice.json", "bf16"),
    ]
    with pytest.raises(PathUnavailable, match=why) as raised:
        choose(machine, recorded)
    message = str(raised.value)
    assert "the vectors on the Milvus collection were made by the openvino-bf16 path" in message
    assert remedy in message and "CDC_MILVUS_COLLECTION" in message
    assert machine.attempted == ["openvino-bf16"]


def test_unknown_recorded_path_is_ignored() -> None:
    choice, _ = choose(Machine(RATES), [Recorded("on the Milvus collection", "fp8", binding=True)])
    assert choice.path == "onnx-int8"


def test_no_passing_path_is_an_error() -> None:
    with pytest.raises(PathUnavailable, match="no inference path passes"):
        choose(Machine({"fp32": 40.0}, failing={"fp32"}), [])


def test_choice_file_round_trip_and_an_unwritable_directory(tmp_path: Path) -> None:
    choice = Choice("bf16", "fastest that passes the gate", (Trial("bf16", 99.0, PASS),))
    assert read_choice(tmp_path) is None
    save_choice(tmp_path / "model", choice)
    assert read_choice(tmp_path / "model") == "bf16"
    blocked = tmp_path / "file"
    blocked.write_text("")
    save_choice(blocked / "model", choice)
    assert read_choice(blocked / "model") is None
