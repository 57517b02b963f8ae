"""Inference paths: the ways one sentence-transformers model can be run on a CPU.

Every path computes the same function as the fp32 model (the quality gate in
indexer/quality.py measures how closely); they differ in speed. The ONNX and
OpenVINO paths run a graph exported from the local fp32 model (transformer,
pooling and any later modules in one graph) and cached under a directory, so
nothing is downloaded and an export happens once per model and cache.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import structlog

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = structlog.get_logger(__name__)

InferencePath = Literal["fp32", "bf16", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-bf16"]
PATHS: tuple[InferencePath, ...] = (
    "fp32",
    "bf16",
    "onnx-fp32",
    "onnx-int8",
    "openvino-fp32",
    "openvino-bf16",
)
"""Every path, the reference (fp32) first."""

Encoder = Callable[[list[str], int], np.ndarray]
"""Texts and a batch size to one float32 row per text, in order (not normalised)."""

TOKEN_BUCKET = 32
"""Token counts an exported graph sees are multiples of this (see _batched_graph)."""
ONNX_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"


class PathUnavailable(Exception):
    """This machine or installation cannot run the path; the message says why."""


def build_encoder(path: InferencePath, model: SentenceTransformer, export_dir: Path) -> Encoder:
    """An encoder running *model* (the loaded fp32 model) along *path*.

    The ONNX and OpenVINO paths export *model* into *export_dir* on first use
    (a few seconds) and reuse the files after. Raises PathUnavailable when a
    package is missing, the CPU lacks what the path needs, or the export
    cannot be written."""
    if path == "fp32":
        return _torch_encoder(model)
    if path == "bf16":
        import torch

        return _torch_encoder(copy.deepcopy(model).to(torch.bfloat16))
    try:
        if path in ("onnx-fp32", "onnx-int8"):
            return _onnx_encoder(model, _onnx_file(model, export_dir, int8=path == "onnx-int8"))
        return _openvino_encoder(model, _onnx_file(model, export_dir, int8=False), path)
    except (RuntimeError, ValueError) as err:
        # The exporter, ONNX Runtime and OpenVINO report a graph they cannot
        # build or run (an operator this model uses, a torn file) this way.
        raise PathUnavailable(f"{path} cannot run this model: {err}") from err


def _torch_encoder(model: SentenceTransformer) -> Encoder:
    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        raw = model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(raw, dtype=np.float32)

    return encode


def _batched_graph(
    model: SentenceTransformer, inputs: set[str], run: Callable[[dict[str, np.ndarray]], Any]
) -> Encoder:
    """An encoder that tokenizes as *model* does and runs the exported graph per batch.

    Texts are batched longest first, as sentence-transformers batches them, so that a
    short text is not padded to a long one's length (openvino-bf16 over the bench
    corpus at batch 8: 95 to 105 texts/s); the vectors come back in the texts' order.
    A batch is padded to a multiple of TOKEN_BUCKET tokens (the attention mask keeps
    the padding out of the result): OpenVINO keeps what it compiles for each input
    shape, so a shape per token count grew the process by about 1 MiB per batch
    without end (684 to 1,514 MiB over 400 batches of random lengths); in buckets
    it levels off (1,135 MiB after 300)."""
    tokenizer = copy.deepcopy(model.tokenizer)
    max_length = model.max_seq_length

    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([-len(text) for text in texts], kind="stable")
        ordered = [texts[i] for i in order]
        rows = []
        for start in range(0, len(ordered), batch_size):
            features = tokenizer(
                ordered[start : start + batch_size],
                padding=True,
                pad_to_multiple_of=TOKEN_BUCKET,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            )
            feed = {k: v.astype(np.int64) for k, v in features.items() if k in inputs}
            rows.append(np.asarray(run(feed), dtype=np.float32))
        stacked = np.concatenate(rows)
        vectors = np.empty_like(stacked)
        vectors[order] = stacked
        return vectors

    return encode


def _onnx_encoder(model: SentenceTransformer, graph: Path) -> Encoder:
    try:
        import onnxruntime
    except ImportError as err:
        raise PathUnavailable(f"onnxruntime is not installed ({err})") from err
    options = onnxruntime.SessionOptions()
    # Idle worker threads spin by default, taking CPU from capture and Milvus Lite
    # that share these cores with the model.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        session = onnxruntime.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
    except (
        ort_errors.Fail,
        ort_errors.InvalidGraph,
        ort_errors.InvalidProtobuf,
        ort_errors.NotImplemented,
    ) as err:
        raise PathUnavailable(f"ONNX Runtime cannot load {graph}: {err}") from err
    inputs = {i.name for i in session.get_inputs()}
    return _batched_graph(model, inputs, lambda feed: session.run(None, feed)[0])


def _openvino_encoder(model: SentenceTransformer, graph: Path, path: InferencePath) -> Encoder:
    try:
        import openvino
    except ImportError as err:
        raise PathUnavailable(f"openvino is not installed ({err})") from err
    core = openvino.Core()
    precision = "bf16" if path == "openvino-bf16" else "f32"
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise PathUnavailable("this CPU has no bf16 instructions (OpenVINO would run f32)")
    compiled = core.compile_model(
        core.read_model(str(graph)),
        "CPU",
        {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"},
    )
    request = compiled.create_infer_request()
    inputs = {port.get_any_name() for port in compiled.inputs}
    return _batched_graph(model, inputs, lambda feed: request.infer(feed)[0].copy())


def _onnx_file(model: SentenceTransformer, export_dir: Path, *, int8: bool) -> Path:
    """The exported graph in *export_dir*, written first if missing."""
    graph = export_dir / ONNX_FILE
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
        if not graph.is_file():
            _write_atomically(graph, lambda target: _export(model, target))
            log.info("model_exported", file=str(graph))
        if not int8:
            return graph
        quantized = export_dir / INT8_FILE
        if not quantized.is_file():
            _write_atomically(quantized, lambda target: _quantize(graph, target))
            log.info("model_quantized", file=str(quantized))
        return quantized
    except OSError as err:
        raise PathUnavailable(f"cannot write the exported model under {export_dir}: {err}") from err


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file renamed into place: two processes exporting
    the same model at once each leave a whole file, never a torn one."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=target.suffix)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _export(model: SentenceTransformer, target: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import torch
    except ImportError as err:
        raise PathUnavailable(f"onnx is not installed ({err})") from err

    example = model.tokenizer(
        ["an example", "a longer example text"], return_tensors="pt", padding=True
    )
    names = list(example.keys())

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            embedding: torch.Tensor = self.model(dict(zip(names, tensors, strict=True)))[
                "sentence_embedding"
            ]
            return embedding

    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated, and says so; the dynamo one
        # needs onnxscript and exports this model no faster at run time.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Graph().eval(),
            tuple(example[name] for name in names),
            str(target),
            dynamo=False,
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=17,
        )


def _quantize(graph: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel int8 weights of the matrix products, activations quantised per
    # batch at run time: the dynamic scheme of sentence-transformers' avx512_vnni.
    quantize_dynamic(
        graph,
        target,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )
