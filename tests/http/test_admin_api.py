"""The admin API against a real Redis and mongosim, with no service running: the
token's rules, and an answer a person can act on (never a 5xx) for any input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.metrics import Metrics
from api.state import ServiceState
from sidecar.settings import Settings
from tests.conftest import REDIS_URL

TOKEN = "a-token-for-the-admin-api"

ROUTES: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/index/status"): (),
    ("GET", "/index/queue"): (),
    ("POST", "/index/reindex"): ("ids", "filter"),
    ("POST", "/index/pause"): ("reason",),
    ("POST", "/index/resume"): (),
    ("GET", "/checkpoint"): (),
    ("POST", "/checkpoint/reset"): ("to_now", "to_time", "to_token", "rescan"),
    ("GET", "/backfill"): (),
    ("POST", "/backfill"): ("collections", "filter"),
    ("POST", "/backfill/cancel"): (),
    ("GET", "/check"): (),
    ("POST", "/check"): ("repair", "sample"),
    ("GET", "/explain/{id}"): (),
    ("GET", "/dlq"): (),
    ("GET", "/dlq/{id}"): (),
    ("POST", "/dlq/replay"): ("ids", "all"),
    ("POST", "/dlq/purge"): ("ids", "all"),
}
"""Each endpoint and the fields its body takes."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
queries = st.dictionaries(
    st.sampled_from(["lang", "n", "$or", "$where", "tag", "$gt"]), json_values, max_size=2
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "ids": st.lists(st.text(max_size=12) | st.sampled_from(["1-0", "1764520000000-0"]), max_size=3),
    "filter": st.none() | st.text(max_size=20) | queries,
    "reason": st.text(max_size=20),
    "to_now": st.booleans(),
    "to_time": st.text(max_size=25)
    | st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat()),
    "to_token": st.none() | st.text(max_size=20) | st.dictionaries(st.just("_data"), json_values),
    "rescan": st.booleans(),
    "collections": st.lists(
        st.sampled_from(["articles", "users"]) | st.text(max_size=8), max_size=2
    ),
    "repair": st.booleans(),
    "sample": st.none() | st.integers(-5, 50),
    "all": st.booleans(),
}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, Any]:
    """An endpoint and a body: mostly of the fields it takes, with values of the right
    kind or not, sometimes any JSON at all."""
    method, template = draw(st.sampled_from(sorted(ROUTES)))
    fields = ROUTES[(method, template)]
    shaped = st.fixed_dictionaries(
        {}, optional={name: FIELD_VALUES[name] | json_values for name in fields}
    )
    body = draw(shaped | json_values) if method == "POST" else None
    return method, template, body


path_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40).filter(
    lambda text: "/" not in text and "?" not in text and "#" not in text
)


async def answer(
    configured: Settings,
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request to the app of a service that has Redis but runs no pipeline here."""
    redis = aioredis.Redis.from_url(REDIS_URL)
    state = ServiceState(configured, Metrics(configured.pipeline), asyncio.Event(), redis=redis)
    transport = httpx.ASGITransport(app=create_app(state))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            content = (
                raw if raw is not None else (None if body is None else json.dumps(body).encode())
            )
            return await client.request(
                method,
                path,
                content=content,
                params=params,
                headers={"content-type": "application/json", **(headers or {})},
            )
    finally:
        await redis.aclose()


@pytest.fixture
def configured(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(admin_token=TOKEN)


async def test_state_changes_need_the_token_and_are_refused_when_none_is_configured(
    configured: Settings, make_settings: Callable[..., Settings]
) -> None:
    unconfigured = make_settings()
    off = await answer(unconfigured, "POST", "/index/pause", body={})
    missing = await answer(configured, "POST", "/index/pause", body={})
    wrong = await answer(
        configured, "POST", "/index/pause", body={}, headers={"Authorization": "Bearer x" * 3}
    )
    basic = await answer(
        configured, "POST", "/index/pause", body={}, headers={"Authorization": f"Basic {TOKEN}"}
    )
    shown = await answer(configured, "GET", "/dlq")
    status = await answer(configured, "GET", "/index/status")
    paused = await answer(
        configured,
        "POST",
        "/index/pause",
        body={"reason": "upgrade"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    assert off.status_code == 403 and "CDC_ADMIN_TOKEN" in off.json()["error"]
    assert [r.status_code for r in (missing, wrong, basic, shown)] == [401] * 4
    assert missing.headers["www-authenticate"] == "Bearer"
    assert status.status_code == 200 and status.json()["service"] is None
    assert paused.status_code == 200, paused.text
    after = await answer(configured, "GET", "/index/status")
    assert after.json()["paused"]["reason"] == "upgrade"


async def test_bad_input_is_a_json_error_naming_the_field(configured: Settings) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    not_json = await answer(configured, "POST", "/backfill", raw=b"{collections:", headers=auth)
    extra = await answer(configured, "POST", "/index/pause", body={"resaon": "x"}, headers=auth)
    two = await answer(
        configured,
        "POST",
        "/checkpoint/reset",
        body={"to_now": True, "rescan": True},
        headers=auth,
    )
    bad_filter = await answer(
        configured, "POST", "/backfill", body={"filter": "{lang: zh"}, headers=auth
    )

    assert not_json.status_code == 422 and not_json.json()["error"]
    assert extra.status_code == 422 and "resaon" in extra.json()["error"]
    assert two.status_code == 400
    assert two.json()["error"].startswith("give exactly one of --to-now, --to-time")
    assert bad_filter.status_code == 400 and "not JSON" in bad_filter.json()["error"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    request=requests(),
    path_value=path_values,
    params=st.dictionaries(
        st.sampled_from(["limit", "after", "collection"]), st.text(max_size=20), max_size=2
    ),
    authorised=st.booleans(),
)
def test_any_input_gets_an_answer_that_is_not_a_server_error(
    configured: Settings,
    request: tuple[str, str, Any],
    path_value: str,
    params: dict[str, str],
    authorised: bool,
) -> None:
    method, template, body = request
    path = template.replace("{id}", quote(path_value or "x", safe=""))
    headers = {"Authorization": f"Bearer {TOKEN}"} if authorised else {}
    response = asyncio.run(
        answer(configured, method, path, body=body, params=params, headers=headers)
    )

    assert response.status_code < 500, (method, path, body, response.text)
    if response.status_code >= 400:
        assert response.json()["error"], response.text
