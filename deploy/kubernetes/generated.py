"""What the build_*.py scripts share: YAML written the way yamllint and a reader expect,
and the command line that rewrites a generated file or checks it is up to date."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Block sequences indented under their key (as yamllint expects), no anchors (an
    alias in the source is written out in full), multi-line strings as literal blocks
    and no line folded, so PromQL, descriptions and JSON read as in their source."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def document(header: str, resource: dict[str, Any]) -> str:
    """*resource* as one YAML document after the comment *header*."""
    body = yaml.dump(resource, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
    return header + "---\n" + body


def write_or_check(
    script: str, description: str, source: Path, output: Path, render: Callable[[str], str]
) -> int:
    """The command line of a build script: rewrite *output* from *source* with *render*,
    or, with --check, exit 1 when it is not what *render* makes of *source*."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not up to date")
    args = parser.parse_args()
    expected = render(source.read_text(encoding="utf-8"))
    current = output.read_text(encoding="utf-8") if output.exists() else None
    if args.check:
        if current != expected:
            print(f"{output} is stale: run {Path(script).name}", file=sys.stderr)
            return 1
        return 0
    if current != expected:
        output.write_text(expected, encoding="utf-8")
        print(f"wrote {output}")
    return 0
