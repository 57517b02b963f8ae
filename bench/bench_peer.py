"""The sidecar against LangChain's indexing API, on the same documents, changes, model and
chunks, in the same run.

The peer is what a user would build instead: ``langchain_core.indexing.index()`` with
an SQLRecordManager on SQLite, ``langchain_milvus.Milvus`` on Milvus Lite and
``cleanup="incremental"``, fed each batch of changes as the changed documents
(bench/langchain_peer.py, run as a child process in a virtualenv of its own that this
script creates once and reuses, so none of its packages enters the project's). The
sidecar runs as bench_pipeline.py runs it (``cdc-sidecar run`` against mongosim,
Redis and Milvus Lite) and captures the same writes from MongoDB's change stream.
Both sides use the same model and encode batch size, and embed the same chunk texts:
the peer is handed the chunks the sidecar's chunker cuts (so its chunking, about 0.4 ms
a chunk, is not in its time). Each side runs the model as it is configured: the sidecar
on ``--precision`` (default ``auto``, its own default: the fastest path that passes the
quality gate here), the peer through sentence-transformers, as LangChain's
HuggingFaceEmbeddings does, in each of ``--peer-precisions`` (fp32, its default, and
bf16, which a user can ask for with ``model_kwargs``). The peer's best configuration
over its precisions and ``index()`` batch sizes is the one the ratio is taken against.

Phases: a bulk load of N documents (inserted in batches of 50; the peer indexes the
same batches); a mixed workload of M changes (80 % set a metadata field that is not
indexed, 15 % append a sentence to one paragraph, 5 % delete), written to MongoDB as
ordered bulk writes of 50 changes and passed to the peer in the same batches; and the
same changes again on a fresh pipeline whose indexed metadata includes the changing
field. For each: wall time from the first write to
the last change searchable (the sidecar's last commit; the peer's last ``index()``
call returning), changes/s, texts embedded (the sidecar's ``chunks_embedded``
counter, the peer's embeddings counted around its Embeddings), the sidecar/peer
ratio, the bare model's rate over the texts the phase had to embed, and an
exhaustive check of both final indexes against the source: every live document's
chunk texts and metadata, nothing more.

    .venv/bin/python bench/bench_peer.py [--documents 274] [--changes 500]
        [--precision auto|fp32|bf16|...] [--peer-precisions fp32,bf16]
        [--peer-batch-sizes 32,100,1000] [--plot out.png] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from bench_pipeline import (
    COLLECTION,
    DATABASE,
    MILVUS_COLLECTION,
    Doc,
    Model,
    Run,
    add_model_options,
    bench_run,
    bulk_documents,
    wait_for,
)
from peer_report import PhaseSpec, Result, plot, report
from peer_venv import peer_python
from pymongo import DeleteOne, UpdateOne
from workload import CHANGING_FIELD, Change, draw_changes, final_documents

from cdc.fields import document_id
from sidecar.status import pipeline_status

INSERT_BATCH = 50
PEER_SCRIPT = Path(__file__).resolve().parent / "langchain_peer.py"
BASE_METADATA = ("lang", "source")
Row = tuple[str, str, str]
"""(document id, chunk text, metadata as sorted JSON): one chunk as the checks compare it."""


def metadata_of(doc: Doc, fields: tuple[str, ...]) -> dict[str, Any]:
    return {field: doc[field] for field in fields if doc.get(field) is not None}


def expected_rows(model: Model, docs: list[Doc], fields: tuple[str, ...]) -> Counter[Row]:
    """The chunks an index true to *docs* holds, with the metadata *fields* of each."""
    rows: Counter[Row] = Counter()
    for doc in docs:
        metadata = json.dumps(metadata_of(doc, fields), sort_keys=True)
        for text in model.chunks([doc]):
            rows[(document_id(doc["_id"]), text, metadata)] += 1
    return rows


def difference(expected: Counter[Row], found: Counter[Row]) -> str:
    """'exact', or how many expected rows are missing and how many found rows are extra."""
    missing, extra = expected - found, found - expected
    if not missing and not extra:
        return "exact"
    return f"{sum(missing.values())} missing, {sum(extra.values())} extra"


def new_texts(model: Model, docs: list[Doc], changes: list[Change]) -> list[str]:
    """The chunk texts each change creates that its document did not hold just before."""
    state = {doc["_id"]: Counter(model.chunks([doc])) for doc in docs}
    texts: list[str] = []
    for change in changes:
        after = Counter(model.chunks([change.document])) if change.document else Counter()
        texts += list((after - state.get(change.id, Counter())).elements())
        state[change.id] = after
    return texts


def peer_batches(
    model: Model, groups: list[list[Change]], fields: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Each group of changes as a user hands it to index(): the latest version of each
    changed document, cut into chunks, and the ids of the documents deleted."""
    batches = []
    for group in groups:
        latest = {change.id: change.document for change in group}
        upserts = [
            {"id": doc_id, "chunks": model.chunks([doc]), "metadata": metadata_of(doc, fields)}
            for doc_id, doc in latest.items()
            if doc is not None
        ]
        deleted = [doc_id for doc_id, doc in latest.items() if doc is None]
        batches.append({"upsert": upserts, "delete": deleted})
    return batches


def inserts_as_changes(docs: list[Doc]) -> list[Change]:
    return [Change("insert", doc["_id"], None, doc) for doc in docs]


def groups_of(changes: list[Change], size: int) -> list[list[Change]]:
    return [changes[start : start + size] for start in range(0, len(changes), size)]


async def started(run: Run) -> None:
    """Start the sidecar over an empty collection; return once its change stream holds a
    position, so that every later write is captured from the stream."""
    sidecar = run.start_sidecar()

    async def positioned() -> bool:
        return (await pipeline_status(run.redis, run.keys))["checkpoint"] is not None

    await wait_for(positioned, "the sidecar to start", sidecar)


async def settled(run: Run, events: int) -> tuple[int, float]:
    """Wait until capture has seen *events* changes in all and the indexer acknowledged
    them; return the chunks embedded so far and the wall-clock time of the last commit."""
    if run.sidecar is None:
        raise RuntimeError("the sidecar is not running")
    report: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal report
        report = await pipeline_status(run.redis, run.keys)
        seen = report["counters"]["events_captured"] + report["counters"]["events_filtered"]
        return bool(seen >= events and report["queue_length"] == 0 and report["pending"] == 0)

    await wait_for(done, f"{events} changes applied", run.sidecar)
    applied_at = datetime.fromisoformat(report["last_applied"]["applied_at"]).timestamp()
    return report["counters"]["chunks_embedded"], applied_at


async def sidecar_rows(run: Run) -> tuple[Counter[Row], list[Doc]]:
    """Every chunk row in the sidecar's Milvus, and every document in MongoDB."""
    if run.sidecar is None:
        raise RuntimeError("the sidecar is not running")
    client = run.sidecar.milvus()
    rows: Counter[Row] = Counter()
    try:
        iterator = client.query_iterator(
            MILVUS_COLLECTION,
            batch_size=1000,
            filter='id != ""',
            output_fields=["document_id", "text", "metadata"],
        )
        while page := iterator.next():
            for row in page:
                metadata = json.dumps(row["metadata"], sort_keys=True)
                rows[(row["document_id"], row["text"], metadata)] += 1
        iterator.close()
    finally:
        client.close()
    source = await run.mongo[DATABASE][COLLECTION].find({}).to_list()
    return rows, source


async def timed_phase(
    run: Run,
    write: Callable[[], Awaitable[None]],
    count: int,
    after: dict[str, Doc],
    spec: PhaseSpec,
    model: Model,
) -> Result:
    """Time *write* (*count* changes to MongoDB) from its first write to the indexer's
    last commit, then check the whole index against the source, which must hold *after*.

    Raises SystemExit when MongoDB holds anything else: the peer is checked against
    *after*, so both sides must be held to the same truth."""
    counters = (await pipeline_status(run.redis, run.keys))["counters"]
    events = counters["events_captured"] + counters["events_filtered"] + count
    run.meter.others()
    began = time.time()
    await write()
    written = time.time() - began
    embedded, applied_at = await settled(run, events)
    # A change that touches nothing indexed is done once written: capture drops it.
    ended = max(applied_at, began + written)
    result = Result(
        count,
        ended - began,
        embedded - counters["chunks_embedded"],
        "",
        run.meter.others(),
        note=f"MongoDB writes {written:.2f} s",
    )
    rows, source = await sidecar_rows(run)
    if {doc["_id"]: doc for doc in source} != after:
        raise SystemExit("MongoDB does not hold what the workload wrote")
    result.exact = difference(expected_rows(model, source, spec.metadata), rows)
    print(
        f"sidecar, {spec.name}: {count} changes in {result.seconds:.1f} s "
        f"(the writes took {written:.1f} s)",
        flush=True,
    )
    return result


async def sidecar_phases(
    args: argparse.Namespace, model: Model, docs: list[Doc], changes: list[Change], spec: PhaseSpec
) -> list[Result]:
    """The bulk load and the mixed workload through the sidecar with *spec*'s metadata
    indexed, each checked against the source at its end."""
    # No HTTP server: the benchmark reads Redis, and port 8000 may be taken.
    env = [f"CDC_METADATA_FIELDS={','.join(spec.metadata)}", "CDC_HTTP_PORT=0", *args.env]
    run_args = argparse.Namespace(**{**vars(args), "env": env})
    async with bench_run(run_args, model, "peer") as run:
        await started(run)
        articles = run.mongo[DATABASE][COLLECTION]

        async def insert() -> None:
            for start in range(0, len(docs), INSERT_BATCH):
                await articles.insert_many(docs[start : start + INSERT_BATCH])

        async def change() -> None:
            for group in groups_of(changes, args.changes_per_batch):
                await articles.bulk_write(
                    [
                        DeleteOne({"_id": one.id})
                        if one.document is None
                        else UpdateOne({"_id": one.id}, {"$set": one.update})
                        for one in group
                    ]
                )

        initial = {doc["_id"]: doc for doc in docs}
        final = final_documents(docs, changes)
        return [
            await timed_phase(run, insert, len(docs), initial, spec, model),
            await timed_phase(run, change, len(changes), final, spec, model),
        ]


def run_peer(
    python: Path, workload: dict[str, Any], precision: str, batch_size: int
) -> tuple[dict[str, Any], float]:
    """One peer child process over *workload*, its model in *precision*, with index()'s
    *batch_size*; its result and the share of the CPUs that processes other than it and
    this one used meanwhile."""
    with tempfile.TemporaryDirectory(prefix="bench-peer-io-") as tmp:
        paths = Path(tmp) / "workload.json", Path(tmp) / "result.json"
        configured = {**workload, "precision": precision, "index_batch_size": batch_size}
        paths[0].write_text(json.dumps(configured))
        log = Path(tmp) / "peer.log"
        busy, ours = _cpu_busy(), _cpu_ours()
        started = time.monotonic()
        with log.open("w") as out:
            done = subprocess.run(
                [str(python), str(PEER_SCRIPT), *map(str, paths)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
                check=False,
            )
        if done.returncode != 0:
            raise SystemExit(f"the peer failed:\n{log.read_text()[-3000:]}")
        elapsed = (time.monotonic() - started) * (psutil.cpu_count() or 1)
        others = max(0.0, _cpu_busy() - busy - (_cpu_ours() - ours)) / elapsed
        return json.loads(paths[1].read_text()), others


def _cpu_busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - times.iowait)


def _cpu_ours() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peer_rows(rows: list[dict[str, Any]]) -> Counter[Row]:
    return Counter(
        (row["doc_id"], row["text"], json.dumps(row["metadata"], sort_keys=True)) for row in rows
    )


def peer_workload(
    args: argparse.Namespace, model: Model, docs: list[Doc], changes: list[Change]
) -> dict[str, Any]:
    """What the peer child runs: per metadata setting, a fresh index loaded with *docs*
    in batches of INSERT_BATCH, then *changes* in batches of ``args.changes_per_batch``."""
    runs = []
    for fields in (BASE_METADATA, (*BASE_METADATA, CHANGING_FIELD)):
        bulk = peer_batches(model, groups_of(inserts_as_changes(docs), INSERT_BATCH), fields)
        mixed = peer_batches(model, groups_of(changes, args.changes_per_batch), fields)
        runs.append(
            {"phases": [{"name": "bulk", "batches": bulk}, {"name": "mixed", "batches": mixed}]}
        )
    return {"embedding_batch_size": args.batch_size, "runs": runs}


def peer_phases(
    args: argparse.Namespace,
    model: Model,
    docs: list[Doc],
    changes: list[Change],
    final: list[Doc],
) -> tuple[list[list[Result]], dict[str, str]]:
    """The peer in every precision with every index() batch size: per phase (bulk, mixed,
    mixed with the metadata indexed), one Result per configuration; and the package
    versions that ran."""
    python = peer_python()
    workload = peer_workload(args, model, docs, changes)
    per_phase: list[list[Result]] = [[], [], []]
    versions: dict[str, str] = {}
    configurations = [
        (precision, batch_size)
        for precision in args.peer_precisions
        for batch_size in args.peer_batch_sizes
    ]
    for precision, batch_size in configurations:
        config = f"{precision}, batch_size={batch_size}"
        result, others = run_peer(python, workload, precision, batch_size)
        versions = result["versions"]
        plain, indexed = result["runs"]
        for slot, (run, phase, count) in enumerate(
            ((plain, 0, len(docs)), (plain, 1, len(changes)), (indexed, 1, len(changes)))
        ):
            figures = run["phases"][phase]
            fields = BASE_METADATA if run is plain else (*BASE_METADATA, CHANGING_FIELD)
            source = docs if phase == 0 else final
            exact = difference(expected_rows(model, source, fields), peer_rows(figures["rows"]))
            per_phase[slot].append(
                Result(
                    count,
                    figures["seconds"],
                    figures["embedded"],
                    exact,
                    others,
                    config,
                    f"embedding {figures['embedding_seconds']:.2f} s",
                    figures["embedding_seconds"],
                )
            )
        print(
            f"peer, {config}: "
            + ", ".join(f"{results[-1].rate:.1f}" for results in per_phase)
            + " changes/s",
            flush=True,
        )
    return per_phase, versions


async def main_async(args: argparse.Namespace) -> None:
    model = Model(args.precision, args.batch_size, args.cache_dir)
    docs = [{**doc, CHANGING_FIELD: 0} for doc in bulk_documents(args.documents, "doc-")]
    changes = draw_changes(docs, args.changes, args.seed)
    bulk_texts = model.chunks(docs)
    change_texts = new_texts(model, docs, changes)
    model.encode_rate(bulk_texts[:16])
    specs = [
        PhaseSpec("bulk load", BASE_METADATA, len(docs), bulk_texts),
        PhaseSpec("mixed", BASE_METADATA, len(changes), change_texts),
        PhaseSpec(
            f"mixed, {CHANGING_FIELD} indexed",
            (*BASE_METADATA, CHANGING_FIELD),
            len(changes),
            change_texts,
        ),
    ]
    before = [model.encode_rate(spec.needed) for spec in specs]
    plain = await sidecar_phases(args, model, docs, changes, specs[1])
    indexed = await sidecar_phases(args, model, docs, changes, specs[2])
    sidecar = [*plain, indexed[1]]
    final = list(final_documents(docs, changes).values())
    peers, versions = peer_phases(args, model, docs, changes, final)
    after = [model.encode_rate(spec.needed) for spec in specs]
    bare = [statistics.fmean(pair) for pair in zip(before, after, strict=True)]
    print(
        "bare model, texts/s before and after: "
        + ", ".join(
            f"{spec.name} {b:.1f}, {a:.1f}" for spec, b, a in zip(specs, before, after, strict=True)
        )
    )
    report(args, model.path, specs, bare, sidecar, peers, versions)
    if args.plot:
        plot(args.plot, model.path, specs, bare, sidecar, peers)


def peer_precisions(value: str) -> list[str]:
    """The precisions sentence-transformers runs for the peer: fp32 and bf16."""
    parsed = [part.strip() for part in value.split(",") if part.strip()]
    unknown = sorted(set(parsed) - {"fp32", "bf16"})
    if not parsed or unknown:
        raise argparse.ArgumentTypeError(
            f"the peer runs fp32 and bf16, comma-separated; got {value!r}"
        )
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--documents", type=int, default=274)
    parser.add_argument("--changes", type=int, default=500, help="per mixed phase")
    parser.add_argument(
        "--changes-per-batch",
        type=int,
        default=50,
        help="per index() call, and per bulk write to MongoDB",
    )
    # The sidecar's path: its own default, auto.
    add_model_options(parser, precision="auto")
    parser.add_argument(
        "--peer-precisions",
        type=peer_precisions,
        default=["fp32", "bf16"],
        help="the peer's model precisions to try, comma-separated (fp32, bf16)",
    )
    parser.add_argument(
        "--peer-batch-sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[32, 100, 1000],
        help="index()'s batch_size values to try, comma-separated",
    )
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--plot", type=Path, help="write a PNG bar chart here")
    parser.add_argument("--quick", action="store_true", help="40 documents, 60 changes")
    parser.add_argument("--env", action="append", default=[], help="CDC_NAME=value for the sidecar")
    args = parser.parse_args()
    if args.changes < 20:
        parser.error("--changes must be at least 20, so that every kind of change occurs")
    if args.quick:
        args.documents, args.changes, args.changes_per_batch = 40, 60, 20
        args.peer_batch_sizes = [100, 1000]
    os.environ["HF_HUB_OFFLINE"] = "1"
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
