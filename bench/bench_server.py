"""The sidecar's bulk throughput on the embedding server backend, against the in-process model.

Runs the service as deployed (``cdc-sidecar run``, a child process) through
bench_pipeline's harness, over the same N documents already in MongoDB (the
first start's snapshot), once per configuration:

- ``local``: the model inside the sidecar (the default backend), measured first
  and again last; its mean is the baseline;
- ``1 server``: CDC_EMBEDDING_URL naming one Infinity process on this machine
  (scripts/serve_embeddings.sh), torch using every core;
- ``2 servers``: a comma-separated list of two Infinity processes, each given
  half the cores (OMP_NUM_THREADS), the sidecar spreading batches over both.

Each phase runs from the sidecar's ``lease_acquired`` log line (model or
servers checked, Milvus loaded) to the indexer's last commit, in chunks/s; the
servers are started and warmed before, not timed. Every configuration must
embed the same number of chunks. Printed: chunks/s and the ratio to the local
baseline, with the share of the CPUs other processes used meanwhile.

    .venv/bin/python bench/bench_server.py [--documents 100] [--batch-size 8]
        [--server-batch-size 8] [--concurrency 2] [--env CDC_NAME=value ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from bench_pipeline import COLLECTION, DATABASE, ROOT, Model, bench_run, bulk_documents

from indexer.embedding import DEFAULT_BATCH_SIZE, DEFAULT_CACHE_DIR, DEFAULT_MODEL

START_SECONDS = 180.0


@dataclass
class Result:
    name: str
    chunks: int
    seconds: float
    others: float

    @property
    def rate(self) -> float:
        return self.chunks / self.seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def servers(count: int, log_dir: Path) -> Iterator[list[tuple[str, psutil.Process]]]:
    """*count* Infinity processes on free ports, each with the cores shared out evenly:
    each one's URL and process, once it has answered an embedding request (warm)."""
    threads = max(1, (psutil.cpu_count() or 1) // count)
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for index in range(count):
            port = free_port()
            environment = os.environ | ({"OMP_NUM_THREADS": str(threads)} if count > 1 else {})
            with (log_dir / f"infinity-{index}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        ["bash", str(ROOT / "scripts/serve_embeddings.sh"), str(port)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=environment,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}/v1")
        for url, process in zip(urls, processes, strict=True):
            warm(url, process)
        yield [(url, psutil.Process(p.pid)) for url, p in zip(urls, processes, strict=True)]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def warm(url: str, process: subprocess.Popen[bytes]) -> None:
    body = b'{"model": "%s", "input": ["warm up"]}' % DEFAULT_MODEL.encode()
    deadline = time.monotonic() + START_SECONDS
    while True:
        request = urllib.request.Request(
            f"{url}/embeddings", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the embedding server at {url} did not start") from None
            time.sleep(0.2)


async def measure(
    args: argparse.Namespace,
    model: Model,
    name: str,
    extra: list[str],
    helpers: list[psutil.Process],
) -> Result:
    """One first start of the sidecar over --documents documents, with *extra* settings;
    *helpers* (the servers) count as the benchmark's own CPU use, not others'."""
    run_args = argparse.Namespace(**{**vars(args), "env": [*args.env, *extra]})
    async with bench_run(run_args, model, name.replace(" ", "-")) as run:
        run.meter.ours.extend(helpers)
        docs = bulk_documents(args.documents, "doc-")
        await run.mongo[DATABASE][COLLECTION].insert_many(docs)
        run.meter.others()
        phase = await run.snapshot(docs)
    result = Result(name, phase.chunks, phase.seconds, phase.others)
    print(
        f"{name}: {result.rate:.1f} chunks/s ({result.chunks} chunks in {result.seconds:.1f} s; "
        f"other processes used {result.others:.0%} of the CPUs)",
        flush=True,
    )
    return result


async def main_async(args: argparse.Namespace) -> None:
    model = Model(args.precision, args.batch_size, args.cache_dir)
    server_settings = [
        f"CDC_EMBEDDING_BATCH_SIZE={args.server_batch_size}",
        f"CDC_EMBEDDING_CONCURRENCY={args.concurrency}",
    ]
    results = [await measure(args, model, "local (before)", [], [])]
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        for count in (1, 2):
            with servers(count, Path(tmp)) as running:
                name = f"{count} server{'s' if count > 1 else ''}"
                setting = f"CDC_EMBEDDING_URL={','.join(url for url, _ in running)}"
                processes = [process for _, process in running]
                results.append(
                    await measure(args, model, name, [setting, *server_settings], processes)
                )
    results.append(await measure(args, model, "local (after)", [], []))
    report(args, results)


def report(args: argparse.Namespace, results: list[Result]) -> None:
    chunks = {result.chunks for result in results}
    if len(chunks) != 1:
        raise SystemExit(f"the configurations embedded different numbers of chunks: {chunks}")
    local = (results[0].rate + results[-1].rate) / 2
    print(
        f"\n{args.documents} documents, {chunks.pop()} chunks; local: in-process fp32, batch "
        f"{args.batch_size}; servers: Infinity (torch, fp32), batch {args.server_batch_size}, "
        f"{args.concurrency} requests in flight per server; {psutil.cpu_count()} CPUs"
    )
    print(f"{'configuration':<16}{'chunks/s':>10}{'x local':>9}{'others':>8}")
    for result in results:
        print(
            f"{result.name:<16}{result.rate:>10.1f}{result.rate / local:>9.2f}{result.others:>8.0%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--documents", type=int, default=100, help="in the snapshot")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="local")
    parser.add_argument(
        "--server-batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="texts per request"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="requests per server")
    parser.add_argument("--env", action="append", default=[], help="CDC_NAME=value for the sidecar")
    args = parser.parse_args()
    # The servers run the model in fp32: the local baseline does too.
    args.precision, args.cache_dir = "fp32", DEFAULT_CACHE_DIR
    if not (ROOT / ".venv-infinity/bin/infinity_emb").exists():
        raise SystemExit("Infinity is missing: run `bash scripts/ensure_infinity.sh` first")
    os.environ["HF_HUB_OFFLINE"] = "1"
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
