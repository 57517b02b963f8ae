
"""Chunker: sentence boundaries, the model's token window, Chinese text, and properties."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import ConfigurationError
from indexer.chunking import Chunker
from tests.embedders import CountingEmbedder

ENGLISH = (
    "The change stream is the source of truth. Every write to the collection appears in it! "
    "Does the index follow it? It does, because the sidecar reads the oplog directly. "
    "A backend that forgets to publish an event cannot make the index drift; "
    "the sidecar sees the write anyway. "
) * 12

CHINESE = (
    "变更流是唯一的事实来源。每一次写入都会出现在其中！索引会跟随它吗？"
    "会的，因为边车直接读取操作日志；后端即使忘记发布事件，索引也不会漂移。"
    "向量在更新期间始终可以被搜索，先写入新的分块，再删除旧的分块。"
) * 15

SENTENCE_END = re.compile(r"[.!?;。！？；]$")


def _content(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def chunker(minilm: CountingEmbedder) -> Chunker:
    return Chunker(500, 50, count_tokens=minilm.count_tokens, max_tokens=minilm.max_tokens)


def test_english_chunks_end_and_start_at_sentence_boundaries(chunker: Chunker) -> None:
    chunks = chunker(ENGLISH)

    assert len(chunks) > 3
    assert all(len(chunk) <= 500 for chunk in chunks)
    for chunk in chunks:
        assert SENTENCE_END.search(chunk), chunk[-40:]
        assert chunk[0].isupper() or chunk.startswith("the sidecar"), chunk[:40]


def test_chinese_chunks_end_at_punctuation_that_closes_them(chunker: Chunker) -> None:
    chunks = chunker(CHINESE)

    assert len(chunks) > 3
    for chunk in chunks:
        assert re.search(r"[。！？；，]$", chunk), chunk[-10:]


def test_chinese_round_trips_without_overlap(minilm: CountingEmbedder) -> None:
    chunker = Chunker(500, 0, count_tokens=minilm.count_tokens, max_tokens=minilm.max_tokens)

    chunks = chunker(CHINESE)

    assert "".join(chunks) == CHINESE


def test_no_chunk_exceeds_the_model_window(
    chunker: Chunker, minilm: CountingEmbedder
) -> None:
    # 500 Chinese characters are ~500 tokens: the character limit alone would
    # let the model truncate half of every chunk.
    assert minilm.count_tokens(CHINESE[:500]) > minilm.max_tokens

    chunks = chunker(CHINESE + ENGLISH + "１２３４５６７８９０" * 80)

    assert all(minilm.count_tokens(chunk) <= minilm.max_tokens for chunk in chunks)
    assert minilm.max_tokens == 256


def test_consecutive_chunks_overlap(chunker: Chunker) -> None:
    chunks = chunker(ENGLISH)

    for previous, following in itertools.pairwise(chunks):
        assert following[:20] in previous


def test_blank_text_has_no_chunks(chunker: Chunker) -> None:
    assert chunker("") == []
    assert chunker(" \n\n\t ") == []


def test_fingerprint_identifies_the_configuration() -> None:
    def count(text: str) -> int:
        return len(text)

    base = Chunker(500, 50, count_tokens=count, max_tokens=256)

    assert base.fingerprint == Chunker(500, 50, count_tokens=count, max_tokens=256).fingerprint
    assert base.fingerprint != Chunker(400, 50, count_tokens=count, max_tokens=256).fingerprint
    assert base.fingerprint != Chunker(500, 0, count_tokens=count, max_tokens=256).fingerprint
    assert base.fingerprint != Chunker(500, 50, count_tokens=count, max_tokens=128).fingerprint


@pytest.mark.parametrize(("size", "overlap", "max_tokens"), [(0, 0, 10), (10, 10, 10), (10, 2, 0)])
def test_impossible_sizes_are_configuration_errors(
    size: int, overlap: int, max_tokens: int
) -> None:
    with pytest.raises(ConfigurationError):
        Chunker(size, overlap, count_tokens=len, max_tokens=max_tokens)


WORDS = st.sampled_from(
    ["index", "Milvus", "vector", "变更", "流", "索引", "数据库", "x" * 30, "１２３", "é"]
)
PUNCTUATION = st.sampled_from(
    [" ", " ", ". ", "! ", "? ", ", ", "\n", "\n\n", "。", "，", "；", "！"]
)
TEXT = st.lists(st.one_of(WORDS, PUNCTUATION, st.text(max_size=8)), max_size=120).map("".join)


def _is_subsequence(needle: str, haystack: str) -> bool:
    position = 0
    for char in needle:
        position = haystack.find(char, position) + 1
        if position == 0:
            return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, size=st.integers(5, 120), overlap_share=st.floats(0, 0.5))
def test_properties_with_the_real_tokenizer(
    minilm: CountingEmbedder, text: str, size: int, overlap_share: float
) -> None:
    overlap = int(size * overlap_share)
    max_tokens = 24
    chunker = Chunker(size, overlap, count_tokens=minilm.count_tokens, max_tokens=max_tokens)

    chunks = chunker(text)

    assert all(chunk.strip() for chunk in chunks)
    assert all(len(chunk) <= size for chunk in chunks)
    assert all(minilm.count_tokens(chunk) <= max_tokens for chunk in chunks)
    joined = _content("".join(chunks))
    if overlap == 0:
        assert joined == _content(text)
    else:
        assert _is_subsequence(_content(text), joined)
        assert all(_content(chunk) in _content(text) for chunk in chunks)


@settings(max_examples=150, deadline=None)
@given(text=TEXT, max_tokens=st.integers(1, 12))
def test_resplitting_converges_for_any_token_counter(text: str, max_tokens: int) -> None:
    def utf8_bytes(chunk: str) -> int:
        return len(chunk.encode())

    chunker = Chunker(200, 20, count_tokens=utf8_bytes, max_tokens=max_tokens)

    chunks = chunker(text)

    assert all(chunk.strip() for chunk in chunks)
    # A single character is never cut further, whatever it counts as.
    assert all(utf8_bytes(chunk) <= max_tokens or len(chunk) == 1 for chunk in chunks)
    assert _is_subsequence(_content(text), _content("".join(chunks)))
