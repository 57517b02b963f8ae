"""The chunk collection's Milvus schema, and how a stored collection is checked against it.

Metadata representation: one JSON field ``metadata`` holding an object whose
keys are the configured metadata paths as written (dotted paths such as
``"author.name"``, or ``"tags"``) and whose values are any JSON-able value
(string, number, bool, list, object; Chinese text kept as is). A path whose
value is missing or null is left out of the object. Milvus filters on it as
``metadata["author.name"] == "Li"``. One object rather than a field per path
because Milvus Lite 3.2 cannot store a JSON field whose top-level value is a
number or bool, nor read back one that is a string, and because configuring
another path then changes no schema: rows are rewritten, not re-embedded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymilvus import CollectionSchema, DataType, MilvusClient

from core.errors import ConfigurationError

FINGERPRINT_PROPERTY = "cdc_sidecar.embedder_fingerprint"
"""Collection property holding the embedder fingerprint the vectors were made with."""

# VARCHAR limits in bytes of UTF-8. Text is far larger than any chunk (chunks
# are ~500 characters, at most 4 bytes each); keys leave room for long ids.
ID_MAX_BYTES = 512
KEY_MAX_BYTES = 1024
TEXT_MAX_BYTES = 65_535


@dataclass(frozen=True)
class FieldSpec:
    """What start() requires of one stored field."""

    name: str
    kind: DataType
    dimension: int | None = None

    def describe(self) -> str:
        kind = self.kind.name
        return f"{kind}({self.dimension})" if self.dimension is not None else kind


def check_metadata_paths(paths: Sequence[str]) -> tuple[str, ...]:
    """The configured metadata paths, checked. Raises ConfigurationError for an
    empty or repeated path."""
    seen: set[str] = set()
    for path in paths:
        if not path or path in seen:
            raise ConfigurationError(f"metadata field {path!r} is empty or repeated")
        seen.add(path)
    return tuple(paths)


def expected_fields(dimension: int) -> list[FieldSpec]:
    return [
        FieldSpec("id", DataType.VARCHAR),
        FieldSpec("doc_key", DataType.VARCHAR),
        FieldSpec("namespace", DataType.VARCHAR),
        FieldSpec("document_id", DataType.VARCHAR),
        FieldSpec("chunk_index", DataType.INT64),
        FieldSpec("text", DataType.VARCHAR),
        FieldSpec("vector", DataType.FLOAT_VECTOR, dimension),
        FieldSpec("updated_at", DataType.INT64),
        FieldSpec("metadata", DataType.JSON),
    ]


def build_schema(dimension: int, fingerprint: str) -> CollectionSchema:
    schema = MilvusClient.create_schema(
        auto_id=False,
        enable_dynamic_field=False,
        description=f"document chunks embedded by {fingerprint}",
    )
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
    schema.add_field("doc_key", DataType.VARCHAR, max_length=KEY_MAX_BYTES)
    schema.add_field("namespace", DataType.VARCHAR, max_length=KEY_MAX_BYTES)
    schema.add_field("document_id", DataType.VARCHAR, max_length=KEY_MAX_BYTES)
    schema.add_field("chunk_index", DataType.INT64)
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_field("updated_at", DataType.INT64)
    schema.add_field("metadata", DataType.JSON)
    return schema


def schema_differences(expected: Sequence[FieldSpec], described: Mapping[str, Any]) -> list[str]:
    """What differs between the fields start() needs and a describe_collection() result."""
    found: dict[str, FieldSpec] = {}
    for field in described.get("fields", []):
        params = field.get("params") or {}
        dim = params.get("dim")
        found[field["name"]] = FieldSpec(
            field["name"], DataType(field["type"]), int(dim) if dim is not None else None
        )
    wanted = {spec.name: spec for spec in expected}
    differences = [
        f"field {name} is {found[name].describe()}, expected {spec.describe()}"
        for name, spec in wanted.items()
        if name in found and found[name] != spec
    ]
    missing = sorted(wanted.keys() - found.keys())
    extra = sorted(found.keys() - wanted.keys())
    if missing:
        differences.append(f"missing fields {', '.join(missing)}")
    if extra:
        differences.append(f"unexpected fields {', '.join(extra)}")
    return differences
