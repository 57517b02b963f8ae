"""Embedders for tests: a deterministic one for tests about everything but the model,
and the real model with a counter of the texts it encodes (tests assert on the
embedding work done instead of on timing)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.embedding import SentenceTransformerEmbedder


@dataclass
class EmbeddingCounter:
    """Embedding work done so far: ``calls`` to embed() that encoded, ``texts`` encoded."""

    calls: int = 0
    texts: int = 0


class CountingEmbedder(SentenceTransformerEmbedder):
    """The real model, counting what it encodes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.counter = EmbeddingCounter()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = await super().embed(texts)
        if texts:
            self.counter.calls += 1
            self.counter.texts += len(texts)
        return vectors


class HashEmbedder:
    """Deterministic pseudo-embeddings from a hash of the text: no model, no thread.

    Equal texts get equal vectors and different texts unrelated ones; there is
    no notion of meaning. For tests about everything except the model.
    One token per whitespace-separated word plus two, at most 256.
    """

    def __init__(self, dimension: int = 64) -> None:
        if dimension < 1:
            raise ValueError(f"dimension must be at least 1, got {dimension}")
        self._dimension = dimension
        self._counter = EmbeddingCounter()

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def fingerprint(self) -> str:
        return f"hash-embedder-v1:{self._dimension}:fp32"

    @property
    def max_tokens(self) -> int:
        return 256

    @property
    def counter(self) -> EmbeddingCounter:
        return self._counter

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = [self._vector(text) for text in texts]
        self._counter.calls += 1
        self._counter.texts += len(vectors)
        return vectors

    def _vector(self, text: str) -> list[float]:
        digest = b""
        block = 0
        while len(digest) < 4 * self._dimension:
            digest += hashlib.sha256(f"{block}:{text}".encode()).digest()
            block += 1
        raw = np.frombuffer(digest[: 4 * self._dimension], dtype=np.uint32).astype(np.float64)
        centred = raw / float(2**32) - 0.5
        norm = math.sqrt(float(np.dot(centred, centred))) or 1.0
        return [float(x) for x in centred / norm]
