"""The figures of bench_peer.py: one side's result per phase, the printed report and the
bar chart."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
from workload import SHARES


@dataclass
class Result:
    """One side's figures for one phase."""

    changes: int
    seconds: float
    embedded: int
    exact: str
    others: float = 0.0
    config: str = ""
    note: str = ""
    """Where part of the time went: the source writes (sidecar), the model (peer)."""
    model_seconds: float | None = None
    """The seconds inside the model, where the side measured them (the peer)."""

    @property
    def rate(self) -> float:
        return self.changes / self.seconds


@dataclass
class PhaseSpec:
    """One phase of the comparison: the metadata fields it indexes, how many changes it
    makes, and the texts they need embedded."""

    name: str
    metadata: tuple[str, ...]
    changes: int
    needed: list[str]
    """The chunk texts a change-by-change indexer must embed: what the model alone encodes."""


def model_rate(spec: PhaseSpec, encode_rate: float) -> float:
    """Changes/s of the bare model encoding the texts *spec*'s changes need."""
    return spec.changes / (len(spec.needed) / encode_rate)


def report(
    args: argparse.Namespace,
    path: str,
    specs: list[PhaseSpec],
    bare: list[float],
    sidecar: list[Result],
    peers: list[list[Result]],
    versions: dict[str, str],
) -> None:
    print(
        f"\n{args.documents} documents, {args.changes} changes "
        f"({', '.join(f'{share:.0%} {kind}' for kind, share in SHARES)}), "
        f"encode batch {args.batch_size}, {psutil.cpu_count()} CPUs; the sidecar runs "
        f"{path} (CDC_EMBEDDING_PRECISION={args.precision}), the peer "
        f"{' and '.join(args.peer_precisions)}; {args.changes_per_batch} changes per "
        "bulk write and per index() call.\n"
        "peer: " + ", ".join(f"{name} {v}" for name, v in versions.items())
    )
    print(
        "\npeer by precision and index() batch_size "
        "(changes/s; texts embedded; index equals the source):"
    )
    for row in zip(*peers, strict=True):
        print(
            f"  {row[0].config:<22}"
            + "   ".join(
                f"{spec.name}: {r.rate:7.1f} {r.embedded:>6} {r.exact}"
                for spec, r in zip(specs, row, strict=True)
            )
            + f"   (others {row[0].others:.0%})"
        )
    print(
        f"\n{'phase':<22}{'side':<34}{'changes':>8}{'seconds':>9}{'changes/s':>11}"
        f"{'embedded':>10}{'ratio':>8}  {'index vs source':<17}of which"
    )
    for spec, encode, ours, theirs in zip(specs, bare, sidecar, peers, strict=True):
        best = max(theirs, key=lambda r: r.rate)
        sides = ((f"sidecar (others {ours.others:.0%})", ours), (f"peer {best.config}", best))
        for side, r in sides:
            shown = f"{ours.rate / best.rate:8.1f}" if r is ours else " " * 8
            print(
                f"{spec.name:<22}{side:<34}{r.changes:>8}{r.seconds:>9.2f}{r.rate:>11.1f}"
                f"{r.embedded:>10}{shown}  {r.exact:<17}{r.note}"
            )
        print(
            f"{spec.name:<22}{'model alone (' + path + ')':<34}{spec.changes:>8}"
            f"{len(spec.needed) / encode:>9.2f}{model_rate(spec, encode):>11.1f}"
            f"{len(spec.needed):>10}"
        )
    targets = (
        (specs[1], bare[1], sidecar[1], peers[1], 3.0),
        (specs[2], bare[2], sidecar[2], peers[2], 30.0),
    )
    print()
    for spec, encode, ours, theirs, target in targets:
        best = max(theirs, key=lambda r: r.rate)
        ratio = ours.rate / best.rate
        fewer = ours.embedded <= best.embedded
        verdict = "met" if ratio >= target and fewer else "MISSED"
        own_model = max(ours.embedded, 1) / encode
        print(
            f"target {spec.name}: >= {target:g}x the peer's best ({best.config}) with no "
            f"more embeddings: {ratio:.1f}x, {ours.embedded} vs {best.embedded} embedded -> "
            f"{verdict}; were both sides only their model, the ratio would be "
            f"{(best.model_seconds or 0.0) / own_model:.1f}x "
            f"(the peer's {best.model_seconds or 0.0:.2f} s in its model against "
            f"{own_model:.2f} s for the sidecar's texts at the bare model's rate)"
        )
    print(f"\ncommand: .venv/bin/python bench/bench_peer.py {shlex.join(sys.argv[1:])}")


def plot(
    path: Path,
    inference: str,
    specs: list[PhaseSpec],
    bare: list[float],
    sidecar: list[Result],
    peers: list[list[Result]],
) -> None:
    """Grouped bars of changes/s per phase: the sidecar, the peer's best, the model alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {
        f"sidecar ({inference})": [r.rate for r in sidecar],
        "LangChain index(), its best precision and batch_size": [
            max(r.rate for r in ps) for ps in peers
        ],
        f"model alone ({inference}, texts the changes need)": [
            model_rate(spec, encode) for spec, encode in zip(specs, bare, strict=True)
        ],
    }
    figure, axes = plt.subplots(figsize=(9, 5))
    width = 0.8 / len(series)
    for offset, (label, values) in enumerate(series.items()):
        xs = [i + (offset - 1) * width for i in range(len(specs))]
        bars = axes.bar(xs, values, width, label=label)
        axes.bar_label(bars, fmt="%.0f", fontsize=8)
    axes.set_xticks(range(len(specs)), [spec.name for spec in specs])
    axes.set_yscale("log")
    axes.set_ylabel("changes/s (bulk load: documents/s), log scale")
    axes.set_title("Indexing throughput: the sidecar against LangChain's indexing API")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot written to {path}")
