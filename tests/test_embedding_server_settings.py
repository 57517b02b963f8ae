"""The embedding server settings: a list of URLs, the API key kept out of every message,
and the backend the service builds from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigurationError
from indexer.embedding import DEFAULT_MODEL, SentenceTransformerEmbedder
from indexer.remote import RemoteEmbedder
from sidecar.app import build_embedder
from sidecar.settings import load_settings

KEY = "sk-secret-value-123456"


def test_a_comma_separated_list_of_urls_builds_the_server_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CDC_EMBEDDING_URL", "http://a:7997/v1, http://b:7997/v1")
    monkeypatch.setenv("CDC_EMBEDDING_API_KEY", KEY)
    settings = load_settings()
    assert settings.embedding_url == ["http://a:7997/v1", "http://b:7997/v1"]
    assert KEY not in repr(settings)
    assert isinstance(build_embedder(settings), RemoteEmbedder)


def test_without_a_url_the_model_runs_in_process() -> None:
    assert isinstance(build_embedder(load_settings()), SentenceTransformerEmbedder)
    assert load_settings(embedding_url="").embedding_url == []


def test_the_server_model_name_defaults_to_the_model() -> None:
    settings = load_settings(embedding_url="http://a/v1")
    assert settings.embedding_server_model is None
    assert settings.embedding_model == DEFAULT_MODEL


def test_a_url_that_is_not_http_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigurationError, match="CDC_EMBEDDING_URL") as refused:
        load_settings(embedding_url="http://a/v1,grpc://user:hunter2@b:1")
    assert "hunter2" not in str(refused.value)
    assert "user:****@" in str(refused.value)


def test_the_api_key_is_read_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(KEY + "\n")
    monkeypatch.setenv("CDC_EMBEDDING_API_KEY_FILE", str(secret))
    key = load_settings().embedding_api_key
    assert key is not None and key.get_secret_value() == KEY


def test_a_refused_api_key_is_not_shown() -> None:
    with pytest.raises(ConfigurationError, match="CDC_EMBEDDING_API_KEY") as refused:
        load_settings(embedding_api_key=["not", KEY])
    assert KEY not in str(refused.value)
