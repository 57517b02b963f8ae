"""The embedding server backend against a real server (Infinity serving the packaged
all-MiniLM-L6-v2): the same vectors and token counts as the local model, batching,
start-up checks, failover across a list of servers, and how each failure is
classified. Statuses a real server cannot be made to answer on demand (a 400 for
one input, a 503) come from a scripted exchange."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.errors import ConfigurationError, DocumentRejected, EmbedderUnavailable, is_outage
from indexer.embedding import DEFAULT_MODEL
from indexer.remote import RemoteEmbedder
from indexer.store import VectorStore
from indexer.tokenizer import LocalTokenizer
from tests.embedders import CountingEmbedder
from tests.infinity_server import API_KEY, InfinityServer
from tests.tcp_proxy import TcpProxy, free_port

pytestmark = pytest.mark.model

TEXTS = [
    "The river runs past the old library and into the harbour.",
    "Milvus keeps the vectors; MongoDB keeps the documents.",
    "向量索引与数据库保持同步。",
    "A short one.",
]

MakeEmbedder = Callable[..., RemoteEmbedder]


@pytest.fixture(scope="module")
def tokenizer() -> LocalTokenizer:
    return LocalTokenizer(DEFAULT_MODEL)


@pytest.fixture
async def make_embedder(
    infinity: InfinityServer, tokenizer: LocalTokenizer
) -> AsyncIterator[MakeEmbedder]:
    """Embedders of the session's server (or *urls*), stopped after the test."""
    made: list[RemoteEmbedder] = []

    def make(**options: object) -> RemoteEmbedder:
        values: dict[str, object] = {
            "urls": [infinity.url],
            "model": infinity.model,
            "tokenizer": tokenizer,
            "api_key": API_KEY,
        }
        values.update(options)
        embedder = RemoteEmbedder(**values)  # type: ignore[arg-type]
        made.append(embedder)
        return embedder

    yield make
    for embedder in made:
        await embedder.stop()


def cosines(a: list[list[float]], b: list[list[float]]) -> np.ndarray:
    return np.sum(np.asarray(a) * np.asarray(b), axis=1)


async def test_vectors_and_token_counts_match_the_local_model(
    make_embedder: MakeEmbedder, minilm: CountingEmbedder
) -> None:
    remote = make_embedder()
    await remote.start()
    vectors = await remote.embed(TEXTS)
    local = await minilm.embed(TEXTS)
    assert cosines(vectors, local).min() > 0.999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert remote.dimension == minilm.dimension == 384
    assert remote.max_tokens == minilm.max_tokens == 256
    assert [remote.count_tokens(t) for t in TEXTS] == [minilm.count_tokens(t) for t in TEXTS]
    # Vectors from a server never pass for the local model's, nor the reverse.
    assert remote.fingerprint == f"server:{DEFAULT_MODEL}:384"
    assert remote.fingerprint != minilm.fingerprint


async def test_a_call_is_cut_into_batches_and_keeps_its_order(
    make_embedder: MakeEmbedder, minilm: CountingEmbedder
) -> None:
    texts = [f"Document {n} is about the {word}." for n, word in enumerate(["orbit"] * 37)]
    remote = make_embedder(batch_size=4, concurrency=3)
    await remote.start()
    vectors = await remote.embed(texts)
    assert len(vectors) == len(texts)
    assert cosines(vectors, await minilm.embed(texts)).min() > 0.999


async def test_a_wrong_api_key_is_refused_at_start_without_showing_it(
    make_embedder: MakeEmbedder,
) -> None:
    remote = make_embedder(api_key="not-the-key-4242")
    with pytest.raises(ConfigurationError, match="CDC_EMBEDDING_API_KEY") as refused:
        await remote.start()
    assert "not-the-key-4242" not in str(refused.value)


async def test_a_server_naming_another_model_is_refused_at_start(
    make_embedder: MakeEmbedder,
) -> None:
    # Infinity answers any model name with its one model, and says which.
    remote = make_embedder(model="intfloat/e5-small-v2")
    with pytest.raises(ConfigurationError, match="CDC_EMBEDDING_SERVER_MODEL"):
        await remote.start()


async def test_a_server_that_is_not_there_is_an_outage(make_embedder: MakeEmbedder) -> None:
    remote = make_embedder(urls=[f"http://127.0.0.1:{free_port()}/v1"])
    with pytest.raises(EmbedderUnavailable) as down:
        await remote.start()
    assert is_outage(down.value)


async def test_a_list_of_servers_fails_over_and_is_down_only_when_all_are(
    make_embedder: MakeEmbedder, infinity: InfinityServer
) -> None:
    proxies = [TcpProxy(infinity.port), TcpProxy(infinity.port)]
    for proxy in proxies:
        await proxy.start()
    try:
        urls = [f"http://127.0.0.1:{proxy.port}/v1" for proxy in proxies]
        remote = make_embedder(urls=urls, batch_size=2)
        await remote.start()
        await proxies[0].cut()
        assert len(await remote.embed(TEXTS * 3)) == 12
        await proxies[1].cut()
        with pytest.raises(EmbedderUnavailable):
            await remote.embed(TEXTS)
        await proxies[0].restore()
        assert len(await remote.embed(TEXTS)) == 4
    finally:
        for proxy in proxies:
            await proxy.cut()


async def test_a_collection_of_local_vectors_refuses_the_server(
    make_embedder: MakeEmbedder, minilm: CountingEmbedder, tmp_path: Path
) -> None:
    remote = make_embedder()
    await remote.start()
    uri = str(tmp_path / "milvus.db")
    local_store = VectorStore(
        uri, "chunks", dimension=384, fingerprint=minilm.fingerprint, metadata_fields=[]
    )
    await local_store.start()
    await local_store.stop()
    server_store = VectorStore(
        uri,
        "chunks",
        dimension=remote.dimension,
        fingerprint=remote.fingerprint,
        metadata_fields=[],
    )
    with pytest.raises(ConfigurationError, match="made by embedder"):
        await server_store.start()


# A scripted server, for the answers a real one cannot be made to give on demand.


def _reply(vectors: list[list[float]], model: str = DEFAULT_MODEL) -> httpx.Response:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return httpx.Response(200, json={"object": "list", "model": model, "data": data})


def scripted(answer: Callable[[list[str]], httpx.Response]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        return answer(json.loads(request.content)["input"])

    return httpx.MockTransport(handle)


def unit(texts: list[str]) -> httpx.Response:
    return _reply([[1.0, 0.0, 0.0] for _ in texts])


async def started(
    tokenizer: LocalTokenizer,
    answer: Callable[[list[str]], httpx.Response],
    *,
    batch_size: int = 32,
) -> RemoteEmbedder:
    """An embedder of one scripted server that answers the start-up probe with unit
    vectors of dimension 3, then as *answer* says."""
    script = {"answer": unit}
    embedder = RemoteEmbedder(
        ["http://scripted:1/v1"],
        model=DEFAULT_MODEL,
        tokenizer=tokenizer,
        batch_size=batch_size,
        transport=scripted(lambda texts: script["answer"](texts)),
    )
    await embedder.start()
    script["answer"] = answer
    return embedder


async def test_servers_of_different_models_are_refused_at_start(
    tokenizer: LocalTokenizer,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        axis = 0 if request.url.host == "one" else 1
        return _reply([[float(axis == 0), float(axis == 1), 0.0]])

    embedder = RemoteEmbedder(
        ["http://one:1/v1", "http://two:1/v1"],
        model=DEFAULT_MODEL,
        tokenizer=tokenizer,
        transport=httpx.MockTransport(answer),
    )
    with pytest.raises(ConfigurationError, match="different models"):
        await embedder.start()


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_a_refused_input_is_the_documents_fault(
    tokenizer: LocalTokenizer, status: int
) -> None:
    embedder = await started(tokenizer, lambda texts: httpx.Response(status, text="too long"))
    with pytest.raises(DocumentRejected, match=f"{status}: too long") as refused:
        await embedder.embed(["x"])
    assert not is_outage(refused.value)


@pytest.mark.parametrize(
    "answer",
    [
        lambda texts: httpx.Response(503, text="loading"),
        lambda texts: httpx.Response(429, text="slow down"),
        lambda texts: httpx.Response(401, text="key revoked"),
        lambda texts: httpx.Response(200, text="<html>a proxy page</html>"),
        lambda texts: _reply([[1.0, 0.0] for _ in texts]),
        lambda texts: _reply([[1.0, 0.0, 0.0]]),
        lambda texts: _reply([[1.0, 0.0, 0.0] for _ in texts], model="another-model"),
    ],
    ids=["503", "429", "401", "not-json", "other-dimension", "too-few", "other-model"],
)
async def test_a_failing_or_changed_server_is_an_outage(
    tokenizer: LocalTokenizer, answer: Callable[[list[str]], httpx.Response]
) -> None:
    embedder = await started(tokenizer, answer)
    with pytest.raises(EmbedderUnavailable) as down:
        await embedder.embed(["x", "y"])
    assert is_outage(down.value)


async def test_an_outage_outranks_a_refused_input_in_one_call(tokenizer: LocalTokenizer) -> None:
    def answer(texts: list[str]) -> httpx.Response:
        return httpx.Response(400 if "bad" in texts else 503, text="no")

    embedder = await started(tokenizer, answer, batch_size=1)
    with pytest.raises(EmbedderUnavailable):
        await embedder.embed(["bad", "good"])
