"""Write the fp32 reference vectors of the quality gate's texts for the default model.

Run after changing indexer/quality_set.json or the bundled model; the file
lands in indexer/quality_reference/, named by the model's weights digest and
the gate set's digest, and ships with the package.

    .venv/bin/python scripts/quality_reference.py
"""

from __future__ import annotations

import asyncio

import numpy as np

from indexer.embedding import SentenceTransformerEmbedder
from indexer.quality import gate_set, reference_file


async def main() -> None:
    embedder = SentenceTransformerEmbedder(precision="fp32")
    await embedder.start()
    gate = gate_set()
    vectors = np.asarray(await embedder.embed(gate.texts), dtype=np.float32)
    await embedder.stop()
    digest = embedder.fingerprint.split(":")[1]
    target = reference_file(gate, digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, vectors)
    print(f"wrote {target} ({vectors.shape[0]} vectors)")


if __name__ == "__main__":
    asyncio.run(main())
