#!/usr/bin/env bash
# Mutation testing of the core modules against the fast test suite, with mutmut.
#
#   bash scripts/mutation.sh                                  # every core module
#   bash scripts/mutation.sh cdc/mapping.py indexer/plan.py   # only these (paths, dotted
#   bash scripts/mutation.sh checkpoints cdc.capture          #  names or directories)
#   MUTATION_TESTS="tests/checkpoints" bash scripts/mutation.sh checkpoints   # fewer tests
#
# Core modules: checkpoints/*.py, cdc/capture.py, cdc/mapping.py, indexer/plan.py,
# indexer/updater.py, indexer/scheduler.py (a file without a function is skipped: mutmut
# only mutates code inside functions). Tests: `pytest -m "not model"` over tests/cdc,
# tests/checkpoints, tests/indexer, tests/core, tests/operations (the only tests of the
# audit log, requests, dead letters, pause and backfill jobs) and tests/test_*.py, less
# tests/test_command_line.py (runs main.py in a child process, where mutmut's instrumented
# code cannot run) and, unless MUTATION_TESTS names it, the ~23 s tests/test_outages.py.
#
# What it does:
#   1. installs the pinned mutmut into .venv if it is missing (same pin as the dev extras);
#   2. copies the working tree as it is now (tracked and untracked, not ignored files) to
#      $MUTATION_WORKDIR/src, so the run neither touches nor sees later edits of the tree;
#   3. runs mutmut there module by module. mutmut runs the tests once to learn which tests
#      reach which function, then, per mutant, only those tests (`-x`, fastest first), in
#      $MUTATION_JOBS forked workers. Workers are forked from a fork server that never ran a
#      test ("forkserver" isolation): forking a process that had started Milvus Lite's gRPC
#      server is not safe. Logging calls (`log.warning(...)`) are not mutated. mutmut's
#      debug mode is on: without it its first test pass and clean-test check failed now and
#      then here (it captures the output they write); with it they pass, and the output of a
#      failing one is in $MUTATION_WORKDIR/logs.
#   4. prints, and writes to $MUTATION_REPORT: per module killed / survived / timeout /
#      no tests / total and the score, then every mutant that was not killed, as
#      file:line, mutmut's name for it and the diff, so a test can be written against it.
#      Score = (killed + timeout) / (total mutants tested); "no tests" counts as not killed.
#
# Timeouts: each test gets MUTATION_TEST_TIMEOUT seconds (pytest-timeout, default 15
# instead of the project's 120; the slowest fast test, tests/test_outages.py[down-3s], takes
# 6-8 s), so a mutant that hangs a test fails it in 15 s at most. mutmut also stops a worker
# after 4 x (its tests' clean time + 10 s) and reports that mutant as "timeout".
#
# Time on the 2-core machine (2,698 mutants, Nov 2026, one worker per run, two runs
# sharing the CPUs): capture about 60 min with its own tests, scheduler 20, updater 12-14,
# plan 10, consumer 5-10, mapping 3, the other checkpoints modules 1-6 each; a full run of
# every core module with every fast test takes a few hours. Each module's time is in the
# report. Faster: pass only the module you work on, and point MUTATION_TESTS at its own tests,
# e.g. MUTATION_TESTS="tests/cdc/test_mapping.py tests/cdc/test_filter_semantics.py" for
# cdc/mapping.py, MUTATION_TESTS="tests/checkpoints tests/operations" for checkpoints.
#
# Environment: MUTATION_TESTS (test paths, space separated), MUTATION_JOBS (default: cores),
# MUTATION_TEST_TIMEOUT (default 15), MUTATION_WORKDIR (default /tmp/cdc-mutation),
# MUTATION_REPORT (default $MUTATION_WORKDIR/report.txt). Needs Redis on 127.0.0.1:6379
# (started through scripts/ensure_redis.sh). Exit status: 0 when every module ran, 1 if one
# failed to run (surviving mutants do not fail the script).
set -euo pipefail
cd "$(dirname "$0")/.."
MUTMUT_PIN="mutmut==3.8.1"

[ -x .venv/bin/python ] || bash scripts/setup.sh
if ! .venv/bin/python - "$MUTMUT_PIN" <<'EOF'
import importlib.metadata as md, sys
name, _, version = sys.argv[1].partition("==")
try:
    sys.exit(0 if md.version(name) == version else 1)
except md.PackageNotFoundError:
    sys.exit(1)
EOF
then
  .venv/bin/pip install --quiet "$MUTMUT_PIN"
fi
bash scripts/ensure_redis.sh

exec .venv/bin/python - "$@" <<'EOF'
"""Driver: snapshot the tree, configure and run mutmut module by module, summarise."""

from __future__ import annotations

import ast
import fnmatch
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path.cwd()
WORK = Path(os.environ.get("MUTATION_WORKDIR", "/tmp/cdc-mutation"))
SRC = WORK / "src"
LOGS = WORK / "logs"
REPORT = Path(os.environ.get("MUTATION_REPORT", str(WORK / "report.txt")))
JOBS = int(os.environ.get("MUTATION_JOBS", str(os.cpu_count() or 2)))
TEST_TIMEOUT = int(os.environ.get("MUTATION_TEST_TIMEOUT", "15"))
MUTMUT = str(REPO / ".venv" / "bin" / "mutmut")
CORE = [
    "checkpoints/*.py",
    "cdc/capture.py",
    "cdc/mapping.py",
    "indexer/plan.py",
    "indexer/updater.py",
    "indexer/scheduler.py",
]
FAST_TESTS = [
    "tests/cdc",
    "tests/checkpoints",
    "tests/indexer",
    "tests/core",
    "tests/operations",
    "tests/test_*.py",
]
# Runs main.py in a child process: mutmut's instrumented code cannot run there (it looks for
# its config in the child's working directory and fails), and a child's code is not measured.
NOT_UNDER_MUTMUT = ["tests/test_command_line.py"]
# Left out unless MUTATION_TESTS names it: an outage simulation of ~23 s that reaches every
# core module, so every surviving mutant paid for it (it about doubled a full run).
SLOW = ["tests/test_outages.py"]
LOG_CALL = r"^\s*log\.(debug|info|warning|error|exception|critical)\("


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def has_function(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(tree))


def resolve_modules(args: list[str]) -> list[str]:
    """Paths (relative to the repo) of the modules to mutate, core order, no duplicates."""
    found: list[str] = []
    for arg in args or CORE:
        arg = arg.rstrip("/")
        if not arg.endswith(".py") and not (REPO / arg).is_dir() and "." in arg:
            arg = arg.replace(".", "/") + ".py"  # dotted module name
        if (REPO / arg).is_dir():
            arg += "/*.py"
        matches = sorted(glob.glob(arg, root_dir=REPO))
        if not matches:
            sys.exit(f"mutation.sh: no module matches {arg!r}")
        found += [m for m in matches if m not in found]
    return [m for m in found if has_function(REPO / m)]


def snapshot() -> None:
    """Copy the working tree as it is now (tracked + untracked, minus ignored) to SRC."""
    if SRC.exists():
        shutil.rmtree(SRC)
    SRC.mkdir(parents=True)
    for rel in git("ls-files", "-co", "--exclude-standard", "-z").split("\0"):
        src = REPO / rel
        if not rel or not src.is_file() or Path(rel).name.startswith(".coverage"):
            continue
        dst = SRC / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def configure(modules: list[str], tests: list[str]) -> None:
    """Append mutmut's settings to the *copy's* pyproject.toml (the repo's is not touched)."""
    pyproject = SRC / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    # Drop a [tool.mutmut] table the project may have, so ours is the only one.
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    sources = sorted({m.split("/")[0] for m in modules})
    also_copy = sorted(
        p.name for p in SRC.iterdir() if p.name not in sources and p.name not in {"tests", "mutants"}
    )
    pytest_args = ["-m", "not model", "-p", "no:cacheprovider", "-o", f"timeout={TEST_TIMEOUT}"]
    text += f"""

[tool.mutmut]
source_paths = {toml_list(sources)}
only_mutate = {toml_list(modules)}
also_copy = {toml_list(also_copy)}
pytest_add_cli_args_test_selection = {toml_list(tests)}
pytest_add_cli_args = {toml_list(pytest_args)}
process_isolation = "forkserver"
debug = true
do_not_mutate_patterns = [{json.dumps(LOG_CALL)}]
timeout_multiplier = 4.0
timeout_constant = 10.0
use_git_change_detection = false
"""
    pyproject.write_text(text, encoding="utf-8")


def fmt_secs(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s"


def run_module(module: str) -> tuple[float, int, str]:
    dotted = module[:-3].replace("/", ".")
    log = LOGS / (dotted + ".log")
    start = time.monotonic()
    with log.open("a") as out:  # appended: a retry keeps the failed try's output
        rc = subprocess.run(
            [MUTMUT, "run", "--max-children", str(JOBS), f"{dotted}.x*"],
            cwd=SRC, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ).returncode
    lines = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()
    tail = [line for line in lines if not re.match(r"^\W+ (Running|Generating|Listing)", line)][-15:]
    return time.monotonic() - start, rc, "\n".join(tail)


def function_lines(source: str) -> dict[str, tuple[int, int]]:
    """'Class.method' / 'function' -> (first line incl. decorators, last line)."""
    spans: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                spans.setdefault(prefix + child.name, (first, child.end_lineno or child.lineno))
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(ast.parse(source), "")
    return spans


def locate(mutant: str, diff: str, source_lines: list[str], spans: dict[str, tuple[int, int]]) -> int | None:
    """The line in the original file of the mutant's first changed line."""
    func = mutant.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]  # xǁClassǁmethod or x_function
    key = ".".join(func[2:].split("ǁ")) if func.startswith("xǁ") else func[2:]
    if key not in spans:
        return None
    first, last = spans[key]
    expected, removed, offset = None, None, 0
    for line in diff.splitlines():
        m = re.match(r"@@ -(\d+)", line)
        if m:
            offset = int(m.group(1)) - 1
            continue
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed, expected = line[1:].strip(), first + offset
            break
        if line.startswith(" ") or line == "":
            offset += 1
    if removed is None:
        return None
    candidates = [n for n in range(first, last + 1) if source_lines[n - 1].strip() == removed]
    if not candidates:
        return expected
    return min(candidates, key=lambda n: abs(n - expected))


def summarise(modules: list[str], timings: dict[str, tuple[float, int]], header: list[str]) -> str:
    os.chdir(SRC)  # mutmut reads its data relative to the working directory
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    kinds = ["killed", "survived", "timeout", "no tests", "suspicious"]
    rows, details = [], []
    totals = dict.fromkeys(kinds + ["other", "total"], 0)
    for module in modules:
        data = SourceFileMutationData(path=Path(module))
        if Path("mutants", module + ".meta").exists():
            data.load()
        counts = dict.fromkeys(kinds + ["other", "total"], 0)
        source = Path(module).read_text(encoding="utf-8")
        lines, spans = source.splitlines(), function_lines(source)
        dotted = module[:-3].replace("/", ".")
        for name, code in sorted(data.exit_code_by_key.items(), key=lambda kv: kv[0]):
            if not name.startswith(dotted + ".x"):
                continue
            status = status_by_exit_code[code]
            if status in ("not checked", "skipped"):
                continue
            counts[status if status in kinds else "other"] += 1
            counts["total"] += 1
            if status in ("killed", "timeout"):
                continue
            try:
                diff = get_diff_for_mutant(name, path=Path(module))
            except Exception as error:  # noqa: BLE001 - a report line is better than no report
                diff = f"(no diff: {error!r})"
            line = locate(name, diff, lines, spans)
            changed = [d for d in diff.splitlines() if d[:1] in "-+" and not d.startswith(("---", "+++"))]
            details.append((module, line or 0, status, name, changed))
        for k in counts:
            totals[k] += counts[k]
        if module not in timings:
            continue
        secs, rc = timings[module]
        rows.append((module, counts, secs, rc))

    def score(c: dict[str, int]) -> str:
        return f"{100 * (c['killed'] + c['timeout']) / c['total']:.1f}%" if c["total"] else "-"

    out = list(header)
    out.append("")
    out.append(f"{'module':<28}{'killed':>7}{'survived':>9}{'timeout':>8}{'no tests':>9}"
               f"{'other':>6}{'total':>6}{'score':>8}{'time':>9}")
    for module, c, secs, rc in rows:
        note = "" if rc == 0 else f"  (mutmut exit {rc}: see {LOGS})"
        out.append(f"{module:<28}{c['killed']:>7}{c['survived']:>9}{c['timeout']:>8}{c['no tests']:>9}"
                   f"{c['other']:>6}{c['total']:>6}{score(c):>8}{fmt_secs(secs):>9}{note}")
    out.append(f"{'ALL':<28}{totals['killed']:>7}{totals['survived']:>9}{totals['timeout']:>8}"
               f"{totals['no tests']:>9}{totals['other']:>6}{totals['total']:>6}{score(totals):>8}"
               f"{fmt_secs(sum(t for t, _ in timings.values())):>9}")
    out.append("")
    out.append(f"Mutants not killed ({len(details)}), by file and line. 'no tests' = no selected test")
    out.append("reaches the function; 'survived' = its tests ran and passed. Show one again with")
    out.append(f"`cd {SRC} && {MUTMUT} show NAME`.")
    for module, line, status, name, changed in sorted(details, key=lambda d: (d[0], d[1], d[3])):
        out.append("")
        out.append(f"{module}:{line}  {status}  {name}")
        out.extend("    " + c for c in changed)
    return "\n".join(out) + "\n"


def main() -> int:
    modules = resolve_modules(sys.argv[1:])
    if not modules:
        sys.exit("mutation.sh: nothing to mutate")
    started = datetime.now(timezone.utc)
    head = git("rev-parse", "HEAD").strip()
    dirty = git("status", "--short").splitlines()
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    snapshot()
    env_tests = os.environ.get("MUTATION_TESTS")
    patterns = env_tests.split() if env_tests else FAST_TESTS
    tests = sorted({t for p in patterns for t in glob.glob(p, root_dir=SRC)}, key=patterns_order(patterns))
    tests = [t for t in tests if t not in NOT_UNDER_MUTMUT and (env_tests or t not in SLOW)]
    if not tests:
        sys.exit(f"mutation.sh: no tests match {patterns}")
    configure(modules, tests)
    print(f"mutation.sh: {len(modules)} module(s), tests {' '.join(tests)}, {JOBS} workers; "
          f"snapshot of {head[:10]} (+{len(dirty)} changed files) in {SRC}", flush=True)

    def header() -> list[str]:
        return [
        "Mutation testing (mutmut 3.8.1, forkserver isolation) of the cdc-sidecar core modules",
        f"git HEAD: {head}  ({len(dirty)} uncommitted changes in the tree copied at start)",
        *(f"    {d}" for d in dirty),
        f"started: {started:%Y-%m-%d %H:%M:%S} UTC, report written: {datetime.now(timezone.utc):%H:%M:%S} UTC"
        f" ({len(timings)} of {len(modules)} modules run)",
        f"command: bash scripts/mutation.sh {' '.join(sys.argv[1:])}".rstrip(),
        f"tests: pytest -m 'not model' -o timeout={TEST_TIMEOUT} {' '.join(tests)}; {JOBS} workers",
        "score = (killed + timeout) / total",
        ]

    timings: dict[str, tuple[float, int]] = {}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    for module in modules:
        print(f"  {module} ...", end=" ", flush=True)
        secs, rc, tail = run_module(module)
        if rc != 0:  # a flaky test fails mutmut's clean run now and then: one more try
            print(f"failed after {fmt_secs(secs)} (exit {rc}), trying again ...", end=" ", flush=True)
            retry_secs, rc, tail = run_module(module)
            secs += retry_secs
        timings[module] = (secs, rc)
        print(f"{fmt_secs(secs)}" + ("" if rc == 0 else f"  FAILED (exit {rc}):\n{tail}"), flush=True)
        # Rewritten after every module, so an interrupted run still leaves what it found.
        REPORT.write_text(summarise(modules, timings, header()), encoding="utf-8")
        if rc != 0:
            # A failed stats or clean-test run fails the same way for every module.
            print(f"mutation.sh: stopping. To see the failing test, run: cd {SRC}/mutants && "
                  f"MUTANT_UNDER_TEST=stats {REPO}/.venv/bin/pytest -m 'not model' -x {' '.join(tests)}")
            break
    report = summarise(modules, timings, header())
    REPORT.write_text(report, encoding="utf-8")
    print()
    print(report)
    print(f"(report written to {REPORT}; mutmut's own data and logs under {WORK})")
    return 0 if all(rc == 0 for _, rc in timings.values()) else 1


def patterns_order(patterns: list[str]):
    def key(path: str) -> tuple[int, str]:
        for i, p in enumerate(patterns):
            if fnmatch.fnmatch(path, p):
                return (i, path)
        return (len(patterns), path)
    return key


sys.exit(main())
EOF
