"""An Embedder whose model runs on embedding servers speaking the OpenAI-compatible
``POST /v1/embeddings`` API (Text Embeddings Inference, vLLM, Infinity, Ollama).

Failures are classified where the HTTP error is caught: a server that cannot be
reached, times out, is busy (429, 5xx), refuses the credentials or answers with
something that is not a set of embeddings is an **outage** (EmbedderUnavailable:
the scheduler retries the batch for as long as it takes, no document is
dead-lettered for it); a 400, 413 or 422 refuses the input itself, a
**document's fault** (DocumentRejected: the scheduler isolates the document it
came from)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import structlog

from core.errors import ConfigurationError, DocumentRejected, EmbedderUnavailable, redact
from indexer.tokenizer import LocalTokenizer

log = structlog.get_logger(__name__)

FINGERPRINT_PREFIX = "server"
"""Fingerprints of vectors from a server start with it, so they never match a local model's."""

PROBE_TEXT = "The sidecar checks which model this server runs."

# Statuses that refuse the request's input; every other failure is the server's.
_INPUT_REFUSED = frozenset({400, 413, 422})

# A server that failed is tried last for this long, so batches go to the others.
_RESTING_SECONDS = 5.0

# Servers behind one list must be the same model: their vectors of the probe agree.
_SAME_MODEL_COSINE = 0.99


class _Refused(EmbedderUnavailable):
    """The server answered with an error status that is not about the input."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Server:
    endpoint: str
    shown: str
    in_flight: int = 0
    resting_until: float = 0.0


class RemoteEmbedder:
    """Embeddings from the servers at *urls* (each a base such as ``http://host:7997/v1``,
    to which ``/embeddings`` is added, or the full endpoint), for the model the
    servers know as *model*; token counts from *tokenizer*, the same model's.

    A call to embed() is cut into requests of *batch_size* texts, sent at once;
    at most *concurrency* times as many requests as there are servers are in
    flight across all calls. Each request goes to the server with the fewest
    requests in flight (so about *concurrency* each while all are up), and on an
    outage of that server to the next one, until every server was tried once.
    *timeout* bounds each request in seconds. *api_key*, when given, is sent as a
    bearer token and appears in no message. *transport*, when given, carries the
    requests instead of httpx's own (a proxy setup, a scripted server).

    start() checks each server: it must answer for *model*, name no other model
    in its reply, and all of them must give the same dimension and the same
    vector of a probe text. Raises ConfigurationError when they do not and
    EmbedderUnavailable when one cannot be reached (the caller waits that out).
    dimension and fingerprint are known after start()."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        model: str,
        tokenizer: LocalTokenizer,
        batch_size: int = 32,
        concurrency: int = 2,
        timeout: float = 30.0,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not urls:
            raise ConfigurationError("name at least one embedding server URL")
        if batch_size < 1 or concurrency < 1 or timeout <= 0:
            raise ConfigurationError("batch_size, concurrency and timeout must be positive")
        self._servers = [_Server(_endpoint(url), redact(_endpoint(url))) for url in urls]
        self._model = model
        self._tokenizer = tokenizer
        self._batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency * len(self._servers))
        self._timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._turn = itertools.count()
        self._client: httpx.AsyncClient | None = None
        self._dimension = 0

    async def start(self) -> None:
        """Load the tokenizer, open the connections and check every server. Idempotent."""
        if self._client is not None:
            return
        await asyncio.to_thread(self._tokenizer.load)
        client = httpx.AsyncClient(
            headers=self._headers, timeout=self._timeout, transport=self._transport
        )
        try:
            await self._check_servers(client)
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        log.info(
            "embedding_servers_checked",
            servers=[server.shown for server in self._servers],
            fingerprint=self.fingerprint,
            dimension=self._dimension,
        )

    async def stop(self) -> None:
        """Close the connections. Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def dimension(self) -> int:
        self._require()
        return self._dimension

    @property
    def fingerprint(self) -> str:
        self._require()
        return f"{FINGERPRINT_PREFIX}:{self._model}:{self._dimension}"

    @property
    def max_tokens(self) -> int:
        return self._tokenizer.max_tokens

    def count_tokens(self, text: str) -> int:
        return self._tokenizer.count_tokens(text)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order. Raises EmbedderUnavailable when no
        server could encode a request of the call, DocumentRejected when a server
        refused a text of it (and no server was down)."""
        if not texts:
            return []
        client = self._require()
        step = self._batch_size
        parts = [list(texts[start : start + step]) for start in range(0, len(texts), step)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._embed_part(client, part)) for part in parts]
        except ExceptionGroup as errors:
            # An outage outranks a refused input: a document is not blamed for it.
            outage = errors.subgroup(EmbedderUnavailable)
            raise (outage or errors).exceptions[0] from None
        matrix = np.concatenate([task.result() for task in tasks])
        result: list[list[float]] = matrix.tolist()
        return result

    async def _embed_part(self, client: httpx.AsyncClient, texts: list[str]) -> np.ndarray:
        async with self._slots:
            tried: list[_Server] = []
            while (server := self._next_server(tried)) is not None:
                tried.append(server)
                server.in_flight += 1
                try:
                    reply = await self._post(client, server, texts)
                    return self._vectors(server, reply, len(texts), self._dimension)
                except EmbedderUnavailable as error:
                    self._rest(server, error)
                    if len(tried) == len(self._servers):
                        raise
                finally:
                    server.in_flight -= 1
        raise EmbedderUnavailable("no embedding server is configured")

    def _next_server(self, tried: list[_Server]) -> _Server | None:
        """The untried server to send to: a rested one before a resting one, then the
        fewest requests in flight, then whose turn it is."""
        now = time.monotonic()
        turn = next(self._turn)
        count = len(self._servers)
        candidates = [
            (server.resting_until > now, server.in_flight, (index - turn) % count, index)
            for index, server in enumerate(self._servers)
            if server not in tried
        ]
        return self._servers[min(candidates)[3]] if candidates else None

    def _rest(self, server: _Server, error: EmbedderUnavailable) -> None:
        now = time.monotonic()
        if server.resting_until <= now and len(self._servers) > 1:
            log.warning("embedding_server_failed", server=server.shown, error=str(error))
        server.resting_until = now + _RESTING_SECONDS

    async def _post(self, client: httpx.AsyncClient, server: _Server, texts: list[str]) -> Any:
        try:
            response = await client.post(
                server.endpoint, json={"model": self._model, "input": texts}
            )
        except httpx.TimeoutException as err:
            raise EmbedderUnavailable(
                f"embedding server {server.shown} did not answer within {self._timeout} s"
            ) from err
        except httpx.HTTPError as err:
            raise EmbedderUnavailable(
                f"cannot reach embedding server {server.shown}: {type(err).__name__}: {err}"
            ) from err
        if response.status_code in _INPUT_REFUSED:
            raise DocumentRejected(
                f"embedding server {server.shown} refused the input "
                f"({response.status_code}: {_detail(response)})"
            )
        if response.status_code != 200:
            raise _Refused(
                f"embedding server {server.shown} answered {response.status_code}: "
                f"{_detail(response)}",
                response.status_code,
            )
        try:
            return response.json()
        except ValueError as err:
            raise EmbedderUnavailable(
                f"embedding server {server.shown} answered with something not JSON"
            ) from err

    def _vectors(self, server: _Server, reply: Any, count: int, dimension: int) -> np.ndarray:
        """The unit vectors in *reply*, in input order. Raises EmbedderUnavailable when
        *reply* is not *count* embeddings of *dimension* (any, when 0) by this model."""
        try:
            named = reply.get("model")
            items = sorted(reply["data"], key=lambda item: item["index"])
            matrix = np.asarray([item["embedding"] for item in items], dtype=np.float32)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise EmbedderUnavailable(
                f"embedding server {server.shown} answered with no valid embeddings: {err!r}"
            ) from err
        if named is not None and named != self._model:
            raise EmbedderUnavailable(
                f"embedding server {server.shown} now runs model {named!r}, not {self._model!r}"
            )
        if matrix.ndim != 2 or len(matrix) != count or (dimension and matrix.shape[1] != dimension):
            raise EmbedderUnavailable(
                f"embedding server {server.shown} answered {matrix.shape} for {count} texts "
                f"of dimension {dimension or 'any'}"
            )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        normalised: np.ndarray = matrix / np.maximum(norms, np.finfo(np.float32).tiny)
        return normalised

    async def _check_servers(self, client: httpx.AsyncClient) -> None:
        probes = [await self._probe(client, server) for server in self._servers]
        first = probes[0]
        for server, probe in zip(self._servers[1:], probes[1:], strict=True):
            if probe.shape != first.shape or float(probe @ first) < _SAME_MODEL_COSINE:
                raise ConfigurationError(
                    f"embedding servers {self._servers[0].shown} and {server.shown} run "
                    f"different models under the name {self._model!r} (their vectors of a "
                    "probe text differ): list only servers of one model in CDC_EMBEDDING_URL"
                )
        self._dimension = int(first.shape[0])

    async def _probe(self, client: httpx.AsyncClient, server: _Server) -> np.ndarray:
        try:
            reply = await self._post(client, server, [PROBE_TEXT])
        except DocumentRejected as err:
            raise ConfigurationError(f"{err} (check CDC_EMBEDDING_SERVER_MODEL)") from None
        except _Refused as err:
            if err.status in (401, 403):
                raise ConfigurationError(f"{err} (check CDC_EMBEDDING_API_KEY)") from None
            if err.status == 404:
                raise ConfigurationError(
                    f"{err} (check CDC_EMBEDDING_URL and CDC_EMBEDDING_SERVER_MODEL)"
                ) from None
            raise
        try:
            vectors = self._vectors(server, reply, 1, 0)
        except EmbedderUnavailable as err:
            raise ConfigurationError(
                f"{err} (set CDC_EMBEDDING_SERVER_MODEL to the name the server gives its model)"
            ) from None
        probe: np.ndarray = vectors[0]
        return probe

    def _require(self) -> httpx.AsyncClient:
        if self._client is None:
            raise EmbedderUnavailable("the embedding servers were not checked yet (start())")
        return self._client


def _endpoint(url: str) -> str:
    base = url.strip().rstrip("/")
    return base if base.endswith("/embeddings") else f"{base}/embeddings"


def _detail(response: httpx.Response) -> str:
    return response.text[:300].strip() or response.reason_phrase
