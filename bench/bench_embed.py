"""Measure embedding throughput per inference path and batch size, and each path's gate.

Encodes the same ~500-character chunks of Python's own documentation
(``pydoc_data.topics``) through SentenceTransformerEmbedder, the code path the
indexer runs, along each inference path (indexer/inference.py) at each batch
size. Prints chunks/s, each as a ratio against fp32 at batch size 8 measured in
the same run, and each path's quality-gate figures (indexer/quality.py: the
minimum cosine similarity to fp32 over the gate set, and top-10 retrieval
agreement) with its verdict. Rounds interleave the settings so that load from
other processes on the machine spreads over all of them; each setting reports
its best round.

    .venv/bin/python bench/bench_embed.py [--chunks 256] [--rounds 2]
        [--paths fp32,bf16,...] [--batch-sizes 8] [--cache-dir data/models]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import torch

from core.errors import ConfigurationError
from indexer.chunking import Chunker
from indexer.embedding import DEFAULT_CACHE_DIR, SentenceTransformerEmbedder
from indexer.inference import PATHS, InferencePath
from indexer.quality import Verdict, gate_set, judge
from indexer.selection import as_path

Setting = tuple[InferencePath, int]
BASELINE: Setting = ("fp32", 8)


def corpus(embedder: SentenceTransformerEmbedder, count: int) -> list[str]:
    chunker = Chunker(500, 0, count_tokens=embedder.count_tokens, max_tokens=embedder.max_tokens)
    chunks = [c for key in sorted(topics) for c in chunker(topics[key]) if len(c) >= 400]
    if len(chunks) < count:
        raise SystemExit(f"only {len(chunks)} chunks of 400-500 characters available")
    return chunks[:count]


async def runnable(
    embedders: dict[Setting, SentenceTransformerEmbedder],
) -> dict[InferencePath, str]:
    """Start every embedder; drop those whose path this machine cannot run (fp32
    always runs) and return why, per path."""
    unavailable: dict[InferencePath, str] = {}
    for setting, embedder in list(embedders.items()):
        try:
            await embedder.start()
        except ConfigurationError as error:
            if setting[0] == "fp32":
                raise
            unavailable[setting[0]] = str(error)
            del embedders[setting]
    return unavailable


async def measure(
    embedders: dict[Setting, SentenceTransformerEmbedder], chunks: list[str], rounds: int
) -> dict[Setting, float]:
    best: dict[Setting, float] = {}
    for embedder in embedders.values():
        await embedder.embed(chunks[:16])
    for round_no in range(rounds):
        for setting, embedder in embedders.items():
            started = time.perf_counter()
            await embedder.embed(chunks)
            rate = len(chunks) / (time.perf_counter() - started)
            best[setting] = max(rate, best.get(setting, 0.0))
            print(f"  round {round_no + 1}: {setting[0]:<14} batch {setting[1]:>2}: {rate:6.1f}/s")
    return best


async def gate(embedders: dict[Setting, SentenceTransformerEmbedder]) -> dict[str, Verdict]:
    """Each path's verdict against fp32 computed in this run."""
    texts = gate_set().texts
    vectors: dict[str, np.ndarray] = {}
    for (path, _), embedder in embedders.items():
        if path not in vectors:
            vectors[path] = np.asarray(await embedder.embed(texts))
    reference = vectors["fp32"]
    return {path: judge(gate_set(), reference, found) for path, found in vectors.items()}


def paths(value: str) -> list[InferencePath]:
    chosen = [as_path(name.strip()) for name in value.split(",")]
    if None in chosen:
        raise argparse.ArgumentTypeError(f"paths are among {', '.join(PATHS)}")
    return [path for path in chosen if path is not None]


async def main_async(args: argparse.Namespace) -> None:
    wanted = ["fp32", *(p for p in args.paths if p != "fp32")]
    sizes = sorted({8, *args.batch_sizes})
    embedders = {
        (path, size): SentenceTransformerEmbedder(
            precision=path, batch_size=size, cache_dir=args.cache_dir
        )
        for path in wanted
        for size in sizes
    }
    chunks = corpus(embedders[BASELINE], args.chunks)
    mean_chars = sum(map(len, chunks)) / len(chunks)
    mean_tokens = sum(map(embedders[BASELINE].count_tokens, chunks)) / len(chunks)
    print(
        f"{len(chunks)} chunks, mean {mean_chars:.0f} characters / {mean_tokens:.0f} tokens; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    unavailable = await runnable(embedders)
    best = await measure(embedders, chunks, args.rounds)
    verdicts = await gate(embedders)
    for embedder in embedders.values():
        await embedder.stop()

    baseline = best[BASELINE]
    print(
        f"\n{'path':<15}{'batch':>6}{'chunks/s':>10}{'vs fp32@8':>11}"
        f"{'min cosine':>12}{'top-10':>8}  gate"
    )
    for (path, size), rate in best.items():
        verdict = verdicts[path]
        print(
            f"{path:<15}{size:>6}{rate:>10.1f}{rate / baseline:>10.2f}x"
            f"{verdict.min_cosine:>12.5f}{verdict.agreement:>8.3f}  "
            + ("passes" if verdict.passed else "FAILS")
        )
    for path, reason in unavailable.items():
        print(f"{path:<15} not measured: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paths", type=paths, default=list(PATHS), help="comma-separated")
    parser.add_argument(
        "--batch-sizes",
        type=lambda value: [int(size) for size in value.split(",")],
        default=[8],
        help="comma-separated; 8 (the baseline's) is always included",
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
