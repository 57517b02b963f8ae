"""The sidecar's configuration, read once at the edge from CDC_* variables and .env.

Everything deeper receives a Settings object (or the values it needs); nothing
else reads the environment."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, Literal

from bson import json_util
from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cdc.query import Query
from core.errors import ConfigurationError, redact
from indexer.embedding import DEFAULT_CACHE_DIR, DEFAULT_MODEL, Precision

# Extended JSON, so a filter can name ObjectIds and dates ({"$oid": ...}, {"$date": ...}).
_QUERY_JSON = json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=UTC)


SECRETS = ("mongo_uri", "redis_url", "admin_token", "embedding_api_key")
"""Settings that may hold a password: each can also be read from a file named by
CDC_<NAME>_FILE (Kubernetes mounts Secrets as files), and is redacted in messages."""


def _split_list(value: Any) -> Any:
    """A list setting from "a,b" or from a JSON array '["a","b"]'."""
    if not isinstance(value, str):
        return value
    if value.strip().startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a valid JSON array ({exc.msg} at column {exc.colno})") from exc
        if not all(isinstance(item, str) for item in items):
            raise ValueError("a JSON array here must hold only strings")
        return [item.strip() for item in items if item.strip()]
    return [part.strip() for part in value.split(",") if part.strip()]


class Settings(BaseSettings):
    """Every knob of one pipeline. See the configuration table in README.md."""

    model_config = SettingsConfigDict(
        env_prefix="CDC_", env_file=".env", extra="ignore", validate_default=True
    )

    mongo_uri: str = Field(
        default="mongodb://127.0.0.1:27017/?replicaSet=rs0", pattern=r"^mongodb(\+srv)?://"
    )
    database: str = "app"
    collections: Annotated[list[str], NoDecode] = Field(default_factory=list)
    pipeline: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]+$")
    text_fields: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["title", "content"]
    )
    metadata_fields: Annotated[list[str], NoDecode] = Field(default_factory=list)
    user_field: str | None = None
    filter: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    priority_filter: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    max_text_chars: int = Field(default=100_000, ge=100)
    oversize_text: Literal["truncate", "reject"] = "truncate"
    full_document: Literal["updateLookup", "whenAvailable", "required"] = "updateLookup"
    on_history_lost: Literal["resync", "halt"] = "resync"
    on_collection_drop: Literal["delete", "keep"] = "delete"
    pre_images: bool = False

    redis_url: str | None = Field(default=None, pattern=r"^(rediss?|unix)://")
    redis_data_dir: Path = Path("data/redis")

    milvus_uri: str = "data/milvus.db"
    milvus_collection: str = Field(default="documents", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    milvus_flush_rows: int = Field(default=5000, ge=1)
    milvus_flush_interval: float = Field(default=1.0, gt=0)

    embedding_model: str = DEFAULT_MODEL
    embedding_device: str = "cpu"
    embedding_batch_size: int = Field(default=8, ge=1, le=1024)
    embedding_precision: Precision = "auto"
    embedding_cache_dir: Path = DEFAULT_CACHE_DIR
    embedding_url: Annotated[list[str], NoDecode] = Field(default_factory=list)
    embedding_server_model: str | None = None
    embedding_api_key: SecretStr | None = None
    embedding_concurrency: int = Field(default=2, ge=1, le=64)
    embedding_timeout: float = Field(default=30.0, gt=0, le=600)
    chunk_size: int = Field(default=500, ge=50, le=20_000)
    chunk_overlap: int = Field(default=50, ge=0)

    capture_batch_size: int = Field(default=500, ge=1, le=10_000)
    capture_max_await: float = Field(default=0.1, gt=0, le=10)

    index_auto_update: bool = True
    index_batch_size: int = Field(default=50, ge=1, le=10_000)
    index_batch_interval: float = Field(default=0.5, gt=0, le=300)
    index_max_workers: int = Field(default=3, ge=1, le=64)
    index_retry_times: int = Field(default=3, ge=0, le=100)
    index_retry_delay: float = Field(default=1.0, gt=0, le=300)
    index_queue_max_size: int = Field(default=1000, ge=1)
    index_queue_timeout: float = Field(default=300.0, gt=0)
    index_drain_seconds: float = Field(default=5.0, gt=0, le=60)
    index_version_enabled: bool = True
    index_version_ttl: int = Field(default=86400 * 30, ge=60)
    backfill_chunk: int = Field(default=200, ge=1, le=10_000)
    backfill_max_queued: int = Field(default=1000, ge=1)
    lease_ttl: float = Field(default=15.0, ge=1, le=300)
    check_interval: float = Field(default=0.0, ge=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Every interface: the kubelet's probes and Prometheus reach the pod's own IP.
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=0, le=65535)
    admin_token: str | None = Field(default=None, min_length=16)

    @field_validator("collections", "text_fields", "metadata_fields", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("text_fields")
    @classmethod
    def _needs_text(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one field whose text is indexed")
        return value

    @field_validator(
        "redis_url",
        "user_field",
        "admin_token",
        "embedding_server_model",
        "embedding_api_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("embedding_url", mode="before")
    @classmethod
    def _http_urls(cls, value: Any) -> Any:
        # Checked before the split, so a refused value is shown as given, redacted.
        value = _split_list(value)
        for url in value if isinstance(value, list) else []:
            if not str(url).startswith(("http://", "https://")):
                raise ValueError(
                    f"{redact(str(url))} is not an http:// or https:// URL of an embeddings API"
                )
        return value

    @field_validator("filter", "priority_filter", mode="before")
    @classmethod
    def _json_query(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json_util.loads(value, json_options=_QUERY_JSON)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(value, dict):
            raise ValueError(
                'must be a JSON object, a MongoDB query such as {"status": "published"}'
            )
        # Refused here, at start-up, rather than on the first document.
        Query(value)
        return value

    @model_validator(mode="after")
    def _priority_needs_the_guard(self) -> Settings:
        if self.priority_filter and not self.index_version_enabled:
            raise ValueError(
                "CDC_PRIORITY_FILTER needs CDC_INDEX_VERSION_ENABLED=true: a document's "
                "changes in the priority lane may be applied before its older ones in the "
                "live lane, and only the version guard keeps the newest"
            )
        return self

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"CDC_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"CDC_CHUNK_SIZE ({self.chunk_size})"
            )
        return self


def known_variables() -> set[str]:
    """Every CDC_* variable that names a setting."""
    names = {f"CDC_{field.upper()}" for field in Settings.model_fields}
    return names | {f"CDC_{field.upper()}_FILE" for field in SECRETS}


def load_settings(**overrides: Any) -> Settings:
    """Read the configuration from the environment and .env; *overrides* win over both.

    Raises ConfigurationError naming each bad variable and what it allows: an
    unknown CDC_* variable (with the closest known name), a secret given both
    directly and as a file, or a value the setting does not allow. No message
    holds a password."""
    environ = _environment()
    _refuse_unknown(environ)
    overrides = {**_secret_files(environ), **overrides}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(
            "invalid configuration:\n  " + "\n  ".join(_problem(e) for e in exc.errors())
        ) from None


def _environment() -> dict[str, str]:
    """The variables Settings reads: .env's, overridden by the process's."""
    dotenv = Path(".env")
    from_file = dotenv_values(dotenv) if dotenv.is_file() else {}
    merged = {name: value for name, value in from_file.items() if value is not None}
    return merged | dict(os.environ)


def _refuse_unknown(environ: Mapping[str, str]) -> None:
    known = known_variables()
    unknown = sorted(name for name in environ if name.startswith("CDC_") and name not in known)
    if not unknown:
        return
    problems = []
    for name in unknown:
        closest = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {closest[0]}?)" if closest else ""
        problems.append(f"{name} is not a setting{hint}")
    raise ConfigurationError(
        "unknown configuration:\n  " + "\n  ".join(problems) + "\n  (see the configuration "
        "table in README.md; a misspelt setting would otherwise be silently ignored)"
    )


def _secret_files(environ: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for field in SECRETS:
        direct, file_variable = f"CDC_{field.upper()}", f"CDC_{field.upper()}_FILE"
        path = environ.get(file_variable)
        if path is None:
            continue
        if direct in environ:
            raise ConfigurationError(f"{direct} and {file_variable} are both set: keep one")
        try:
            values[field] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"{file_variable}: cannot read {path} ({exc.strerror}); mount the secret there "
                f"or unset {file_variable}"
            ) from None
    return values


def _problem(error: Any) -> str:
    field = "_".join(str(part) for part in error["loc"] if isinstance(part, str))
    message = str(error["msg"]).removeprefix("Value error, ")
    if not field:
        # A check across fields: its input is every setting, passwords included.
        return message
    value = error.get("input")
    if field in ("admin_token", "embedding_api_key"):
        return f"CDC_{field.upper()}: {message} (the value is not shown)"
    if field in (*SECRETS, "embedding_url") and isinstance(value, str):
        value = redact(value)
    return f"CDC_{field.upper()}: {message} (got {value!r})"
