"""Measure embedding throughput by batch size and precision, to choose the defaults.

Encodes the same ~500-character chunks of Python's own documentation
(``pydoc_data.topics``) through SentenceTransformerEmbedder, the code path the
indexer runs, at each batch size in fp32 and bf16. Prints chunks/s, each as a
ratio against batch size 8 fp32 measured in the same run, and bf16's cosine
similarity to fp32. Rounds interleave the settings so that load from other
processes on the machine spreads over all of them; each setting reports its
best round.

    .venv/bin/python bench/bench_embed.py [--chunks 256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pydoc_data.topics import topics

import numpy as np
import torch

from indexer.chunking import Chunker
from indexer.embedding import Precision, SentenceTransformerEmbedder

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
BASELINE: tuple[Precision, int] = ("fp32", 8)


def corpus(embedder: SentenceTransformerEmbedder, count: int) -> list[str]:
    chunker = Chunker(
        500, 0, count_tokens=embedder.count_tokens, max_tokens=embedder.max_tokens
    )
    chunks = [c for key in sorted(topics) for c in chunker(topics[key]) if len(c) >= 400]
    if len(chunks) < count:
        raise SystemExit(f"only {len(chunks)} chunks of 400-500 characters available")
    return chunks[:count]


async def measure(
    embedders: dict[tuple[Precision, int], SentenceTransformerEmbedder],
    chunks: list[str],
    rounds: int,
) -> tuple[dict[tuple[Precision, int], float], dict[Precision, np.ndarray]]:
    best: dict[tuple[Precision, int], float] = {}
    vectors: dict[Precision, np.ndarray] = {}
    for embedder in embedders.values():
        await embedder.start()
        await embedder.embed(chunks[:16])
    for round_no in range(rounds):
        for setting, embedder in embedders.items():
            started = time.perf_counter()
            result = await embedder.embed(chunks)
            rate = len(chunks) / (time.perf_counter() - started)
            best[setting] = max(rate, best.get(setting, 0.0))
            vectors.setdefault(setting[0], np.asarray(result))
            print(f"  round {round_no + 1}: {setting[0]} batch {setting[1]:>2}: {rate:6.1f}/s")
    for embedder in embedders.values():
        await embedder.stop()
    return best, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    embedders = {
        (precision, batch): SentenceTransformerEmbedder(precision=precision, batch_size=batch)
        for precision in PRECISIONS
        for batch in BATCH_SIZES
    }
    chunks = corpus(embedders[BASELINE], args.chunks)
    mean_chars = sum(map(len, chunks)) / len(chunks)
    mean_tokens = sum(map(embedders[BASELINE].count_tokens, chunks)) / len(chunks)
    print(
        f"{len(chunks)} chunks, mean {mean_chars:.0f} characters / {mean_tokens:.0f} tokens; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    best, vectors = asyncio.run(measure(embedders, chunks, args.rounds))

    baseline = best[BASELINE]
    print(f"\n{'precision':<10}{'batch':>6}{'chunks/s':>10}{'vs fp32@8':>11}")
    for (precision, batch), rate in best.items():
        print(f"{precision:<10}{batch:>6}{rate:>10.1f}{rate / baseline:>10.2f}x")
    cosine = np.sum(vectors["fp32"] * vectors["bf16"], axis=1)
    print(
        f"\nbf16 vs fp32 cosine similarity: mean {cosine.mean():.5f}, min {cosine.min():.5f}"
    )


if __name__ == "__main__":
    main()
