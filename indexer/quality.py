"""The quality gate: may an inference path stand in for the fp32 model?

A fixed set of texts (quality_set.json beside this module: 40 passages cut
from the demo corpus, 12 in Chinese and 28 in English, and 16 queries, half
in each language) is embedded by the fp32 model (the reference) and by the
candidate. The candidate passes when every text's vector has a cosine
similarity of at least MIN_COSINE to its reference vector, and each query's
top-10 passages by cosine are, on average, at least MIN_AGREEMENT the same
as the reference's.

Reference vectors of the default model ship beside this module, so a start-up
does not have to run fp32 as well; for another model they are computed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

MIN_COSINE = 0.99
MIN_AGREEMENT = 0.95
TOP_K = 10

_HERE = Path(__file__).resolve().parent
SET_FILE = _HERE / "quality_set.json"
REFERENCE_DIR = _HERE / "quality_reference"


@dataclass(frozen=True)
class GateSet:
    """The gate's texts: passages first, then queries, in the order of the vectors."""

    passages: tuple[str, ...]
    queries: tuple[str, ...]

    @property
    def texts(self) -> list[str]:
        return [*self.passages, *self.queries]

    @property
    def digest(self) -> str:
        """Identity of the texts: a reference made for other texts is not this one's."""
        return hashlib.sha256("\x00".join(self.texts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Verdict:
    """How closely a candidate's vectors follow the reference's."""

    min_cosine: float
    agreement: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= MIN_COSINE and self.agreement >= MIN_AGREEMENT

    def describe(self) -> str:
        outcome = "passes" if self.passed else "fails"
        return (
            f"{outcome} (min cosine {self.min_cosine:.4f} >= {MIN_COSINE}, "
            f"top-{TOP_K} agreement {self.agreement:.3f} >= {MIN_AGREEMENT})"
        )


@cache
def gate_set() -> GateSet:
    """The repository's fixed gate set."""
    data = json.loads(SET_FILE.read_text(encoding="utf-8"))
    return GateSet(tuple(data["passages"]), tuple(data["queries"]))


def judge(gate: GateSet, reference: np.ndarray, candidate: np.ndarray) -> Verdict:
    """Compare *candidate*'s vectors of gate.texts with *reference*'s (same shape)."""
    if reference.shape != candidate.shape or reference.shape[0] != len(gate.texts):
        raise ValueError(
            f"expected {len(gate.texts)} vectors each, got {reference.shape} and {candidate.shape}"
        )
    ref, cand = _unit(reference), _unit(candidate)
    cosines = np.sum(ref * cand, axis=1)
    count = len(gate.passages)
    agreement = _top_k_agreement(ref[count:] @ ref[:count].T, cand[count:] @ cand[:count].T)
    return Verdict(float(cosines.min()), agreement)


def shipped_reference(gate: GateSet, weights_digest: str) -> np.ndarray | None:
    """The fp32 vectors of *gate* shipped for the model whose weights digest is
    *weights_digest*, or None when none ship."""
    path = reference_file(gate, weights_digest)
    return np.load(path) if path.is_file() else None


def reference_file(gate: GateSet, weights_digest: str) -> Path:
    return REFERENCE_DIR / f"fp32-{weights_digest}-{gate.digest}.npy"


def _unit(vectors: np.ndarray) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    normalised: np.ndarray = matrix / np.maximum(norms, np.finfo(np.float64).tiny)
    return normalised


def _top_k_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean share of each query's top-k passages that both score matrices agree on."""
    k = min(TOP_K, reference.shape[1])
    shares = [
        len(set(np.argsort(-ref)[:k]) & set(np.argsort(-cand)[:k])) / k
        for ref, cand in zip(reference, candidate, strict=True)
    ]
    return float(np.mean(shares))
