"""`cdc-sidecar demo`: the whole sidecar on embedded defaults, watched live.

Starts mongosim, a private Redis and a Milvus Lite database in a temporary
directory, loads real documents, starts the sidecar (which indexes them on its
first start), then creates, updates and deletes documents while a progress
display follows the index, checks that Milvus equals the source, runs semantic
searches in English and Chinese, and prints a summary."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from checkpoints.queue import applied_through
from checkpoints.tokens import pack_timestamp
from demo.corpus import NEW_DOCUMENTS, documents
from mongosim import ThreadedMongoSim
from sidecar.app import Sidecar, build_embedder, redis_for
from sidecar.redis_server import PrivateRedis
from sidecar.settings import Settings, load_settings
from sidecar.status import pipeline_status

console = Console()

QUERIES = [
    "How do I catch an exception and clean up afterwards?",
    "What does the with statement do?",
    "中国古代修建的军事防御工程",
    "如何把长文档切分成适合嵌入模型的片段？",
]


async def run_demo(*, documents: int, precision: str) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="cdc-demo-") as workdir,
        ThreadedMongoSim() as sim,
        PrivateRedis(data_dir=Path(workdir) / "redis") as redis,
    ):
        settings = load_settings(
            mongo_uri=sim.uri,
            redis_url=redis.url,
            milvus_uri=str(Path(workdir) / "milvus.db"),
            database="demo",
            collections=["articles"],
            text_fields=["title", "content"],
            metadata_fields=["lang", "source"],
            pipeline="demo",
            embedding_precision=precision,
        )
        await _demo(settings, documents)


async def _demo(settings: Settings, limit: int) -> None:
    corpus = documents(limit)
    console.rule("[bold]cdc-sidecar demo")
    console.print(
        f"mongosim   {settings.mongo_uri}\nredis      {settings.redis_url}\n"
        f"milvus     {settings.milvus_uri}\nmodel      {settings.embedding_model} "
        f"({settings.embedding_precision})"
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_uri)
    articles = mongo[settings.database]["articles"]
    await articles.insert_many([dict(doc) for doc in corpus])
    console.print(f"loaded {len(corpus)} documents into MongoDB before the sidecar starts")

    embedder = build_embedder(settings)
    await embedder.start()
    stop = asyncio.Event()
    started = time.monotonic()
    try:
        async with (
            redis_for(settings, start_private=False) as redis,
            Sidecar(settings, redis=redis, embedder=embedder) as sidecar,
        ):
            service = asyncio.create_task(sidecar.run(stop))
            await _follow("first start: indexing existing documents", sidecar, service)
            first_pass = time.monotonic() - started
            embedded_first = (await sidecar.stats.read())["chunks_embedded"]

            await _changes(articles, corpus)
            await _follow("following live changes", sidecar, service)
            await _verify(sidecar, articles)
            await _search(sidecar)
            stop.set()
            await service
            report = await pipeline_status(redis, sidecar.keys)
    finally:
        await embedder.stop()
        await mongo.close()
    embedded_since = report["counters"]["chunks_embedded"] - embedded_first
    _summary(report, first_pass, embedded_first, embedded_since)


async def _changes(articles: Any, corpus: list[dict[str, Any]]) -> None:
    """Create, update (text and metadata only) and delete a few documents."""
    edited = [doc for doc in corpus if doc["lang"] == "en"][:10]
    for doc in edited:
        paragraphs = doc["content"].split("\n\n")
        paragraphs[-1] = paragraphs[-1] + " (Edited by the demo: this paragraph changed.)"
        await articles.update_one(
            {"_id": doc["_id"]}, {"$set": {"content": "\n\n".join(paragraphs)}}
        )
    for doc in corpus[10:15]:
        await articles.update_one({"_id": doc["_id"]}, {"$set": {"source": "reviewed"}})
    for doc in corpus[-5:]:
        await articles.delete_one({"_id": doc["_id"]})
    await articles.insert_many([dict(doc) for doc in NEW_DOCUMENTS])
    console.print("changed: 10 text edits, 5 metadata-only edits, 5 deletes, 5 inserts")


async def _follow(title: str, sidecar: Sidecar, service: asyncio.Task[None]) -> None:
    """Show the queue draining until every change made so far is captured and applied."""
    reply = await sidecar.mongo[sidecar.settings.database].command("ping")
    written = pack_timestamp(reply["operationTime"])
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(title, total=None, detail="")
        seen = 0

        async def applied() -> bool:
            nonlocal seen
            if service.done():
                service.result()
                raise RuntimeError("the sidecar stopped unexpectedly")
            report = await pipeline_status(sidecar.redis, sidecar.keys)
            counters, backlog = report["counters"], report["queue_length"]
            seen = max(seen, counters["events_captured"])
            progress.update(
                task,
                total=seen,
                completed=seen - backlog,
                detail=(
                    f"documents indexed {counters['documents_indexed']:>4}  chunks embedded "
                    f"{counters['chunks_embedded']:>5}  skipped {counters['embeddings_skipped']}"
                ),
            )
            return await applied_through(sidecar.redis, sidecar.keys, written)

        await _until(applied, seconds=900)


async def _until(check: Callable[[], Awaitable[bool]], *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the index did not converge in time")
        await asyncio.sleep(0.25)


async def _verify(sidecar: Sidecar, articles: Any) -> None:
    """Milvus holds exactly the live documents' chunks: none for deleted ones."""
    live = {f"demo.articles/{doc['_id']}" async for doc in articles.find({}, {"_id": 1})}
    indexed = set(await sidecar.store.chunk_ids_by_document())
    missing, extra = live - indexed, indexed - live
    if missing or extra:
        raise RuntimeError(
            f"index differs from MongoDB: missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
        )
    console.print(
        f"[green]verified[/green]: Milvus holds chunks for exactly the {len(live)} "
        "live documents, none for deleted ones"
    )


async def _search(sidecar: Sidecar) -> None:
    await sidecar.store.flush()
    for query in QUERIES:
        [vector] = await sidecar.embedder.embed([query])
        hits = await sidecar.store.search(vector, limit=3)
        table = Table(title=f"search: {query}", title_justify="left", show_lines=False)
        table.add_column("score", justify="right")
        table.add_column("document")
        table.add_column("chunk")
        for hit in hits:
            snippet = " ".join(hit.text.split())[:90]
            table.add_row(f"{hit.score:.3f}", hit.doc_key.split("/", 1)[1], snippet)
        console.print(table)


def _summary(report: dict[str, Any], first_pass: float, embedded: int, reembedded: int) -> None:
    counters = report["counters"]
    console.rule("[bold]summary")
    console.print(
        f"first start: {embedded} chunks embedded in {first_pass:.1f} s "
        f"({embedded / first_pass:.1f} chunks/s, Milvus Lite start-up included)\n"
        f"live changes: {reembedded} chunks re-embedded (edited paragraphs and new documents "
        f"only); {counters['embeddings_skipped']} chunks kept their vectors\n"
        f"totals: {counters['events_captured']} events captured, "
        f"{counters['documents_indexed']} document versions indexed, "
        f"{counters['deletes']} deletes, {report['dead_letters']} dead letters"
    )
