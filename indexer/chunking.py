"""Cut a document's indexed text into chunks that the embedding model sees whole."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from langchain_text_splitters import RecursiveCharacterTextSplitter

from core.errors import ConfigurationError

# Coarsest boundary first. Chinese has no spaces between words, so its sentence
# and clause punctuation (full-width forms, plus the half-width ones Chinese
# writers also type) must be boundaries too or a Chinese paragraph would only
# ever be cut mid-word by the last-resort "" separator.
SEPARATORS: tuple[str, ...] = (
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    "．",
    "…",
    ". ",
    "! ",
    "? ",
    "；",
    "; ",
    "，",
    "、",
    ", ",
    "：",
    " ",
    "",
)

# Bump when the splitting algorithm changes in a way that changes its output,
# so content hashes built on the fingerprint stop matching and documents re-chunk.
_ALGORITHM_VERSION = "1"


class Chunker:
    """Split text into ordered chunks of at most ``chunk_size`` characters.

    Boundaries are preferred in the order of ``SEPARATORS`` (paragraph, line,
    sentence, clause, word, character); punctuation stays at the end of the
    sentence it closes. Consecutive chunks share up to ``chunk_overlap``
    characters. Any chunk whose ``count_tokens`` exceeds ``max_tokens`` is split
    again, without overlap, until every chunk fits, so the model never
    truncates one (a single character is never cut, whatever it counts as).
    ``count_tokens`` must count exactly what the model sees
    (including special tokens such as [CLS]/[SEP] if ``max_tokens`` includes them).

    Raises ConfigurationError for sizes that cannot work.
    """

    def __init__(
        self,
        chunk_size: int,
        chunk_overlap: int,
        *,
        count_tokens: Callable[[str], int],
        max_tokens: int,
    ) -> None:
        if chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be at least 1, got {chunk_size}")
        if not 0 <= chunk_overlap < chunk_size:
            raise ConfigurationError(
                f"chunk_overlap must be in [0, chunk_size={chunk_size}), got {chunk_overlap}"
            )
        if max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be at least 1, got {max_tokens}")
        self._chunk_size = chunk_size
        self._chunk_overlap = chunk_overlap
        self._count_tokens = count_tokens
        self._max_tokens = max_tokens
        self._splitter = _splitter(chunk_size, chunk_overlap)
        identity = "|".join(
            [
                _ALGORITHM_VERSION,
                str(chunk_size),
                str(chunk_overlap),
                str(max_tokens),
                *SEPARATORS,
            ]
        )
        self._fingerprint = (
            f"chunker-v{_ALGORITHM_VERSION}:{chunk_size}/{chunk_overlap}/{max_tokens}:"
            + hashlib.sha256(identity.encode()).hexdigest()[:12]
        )

    @property
    def fingerprint(self) -> str:
        """Identity of this configuration: equal fingerprints cut equal text equally."""
        return self._fingerprint

    def __call__(self, text: str) -> list[str]:
        """Return the chunks of *text* in order; none is empty or whitespace-only.

        Text that is empty or only whitespace gives no chunks.
        """
        chunks: list[str] = []
        for chunk in self._splitter.split_text(text):
            chunks.extend(self._fit(chunk))
        return chunks

    def _fit(self, chunk: str) -> list[str]:
        if not chunk.strip():
            return []
        tokens = self._count_tokens(chunk)
        if tokens <= self._max_tokens or len(chunk) == 1:
            return [chunk]
        # Aim a little under the proportional size: token density varies within
        # a chunk, and one more round costs far less than a truncated embedding.
        size = max(1, min(len(chunk) - 1, len(chunk) * self._max_tokens * 9 // (tokens * 10)))
        fitted: list[str] = []
        for piece in _splitter(size, 0).split_text(chunk):
            fitted.extend(self._fit(piece))
        return fitted


def _splitter(chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        separators=list(SEPARATORS),
        keep_separator="end",
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
    )
