#!/usr/bin/env python3
"""Mutation run over ``transfer/methods/*.py``: do the method tests notice a wrong formula?

Each mutant changes one thing in one file -- an arithmetic operator (``+ -``, ``* /``, ``**``),
a comparison (``< <=``, ``> >=``, ``== !=``, ``is / is not``), a unary minus dropped, a numeric
constant (int ``k -> k + 1``, float ``x -> 2x`` or ``0 -> 1``), ``True <-> False``, or a constant
index (``a[k] -> a[k + 1]``) -- and the method tests run against it; a mutant is *killed* when they
fail (or time out), *survives* otherwise.

Nothing under the working tree is touched: the package and tests are copied to a scratch folder
(``--work``, default ``/tmp/mutwork``), mutants are written there one at a time and the original
file is put back after each (``try/finally``, also on Ctrl-C). Tests run in a forked child of a
process that has already imported torch and pytest (one thread, ``-x``), so a mutant costs the
tests' run time, not an interpreter start.

Usage (not part of CI; see docs/testing.md)::

    python3 scripts/mutate.py                     # every mutant, prints the score and survivors
    python3 scripts/mutate.py --list              # only list the mutants
    python3 scripts/mutate.py --only rules.py --limit 20
    python3 scripts/mutate.py --stride 3 --offset 1   # every third mutant, starting at the second
    python3 scripts/mutate.py --json runs/mutants.json  # record each outcome as it lands; rerun to resume

With ``--json`` the record is rewritten (atomically) after every mutant, together with a fingerprint
of the mutated files and the tests; rerunning the same command skips the mutants already recorded,
and refuses a record made against other code or tests.
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path("transfer/methods")
TESTS = ["tests/methods/test_deviations.py", "tests/methods/test_equivalence.py",
         "tests/methods/test_reference_ports.py", "tests/methods/test_form_params.py"]

_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
               ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv}
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}


@dataclass(frozen=True)
class Mutant:
    file: str      # relative to the repository root
    index: int     # the n-th mutation site of the file (stable for an unchanged file)
    line: int
    what: str      # human-readable description


def _skip_nodes(tree: ast.AST) -> set:
    """Nodes not worth mutating: docstrings, assert statements (messages and shape checks),
    annotations, f-strings and exception messages."""
    skip: set = set()

    def mark(n: Optional[ast.AST]) -> None:
        if n is not None:
            for sub in ast.walk(n):
                skip.add(id(sub))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assert, ast.JoinedStr, ast.Raise)):
            mark(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
            for a in node.args.args + node.args.kwonlyargs:
                mark(a.annotation)
        if isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                mark(first)
    return skip


def _sites(tree: ast.AST) -> Iterator[Tuple[ast.AST, str, str]]:
    """(node, kind, description) for every mutation site, in a deterministic order."""
    skip = _skip_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
            yield node, "binop", f"{type(node.op).__name__} -> {_BINOP_SWAP[type(node.op)].__name__}"
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAP:
            yield node, "binop", f"{type(node.op).__name__}= -> {_BINOP_SWAP[type(node.op)].__name__}="
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP_SWAP:
            yield node, "cmp", f"{type(node.ops[0]).__name__} -> {_CMP_SWAP[type(node.ops[0])].__name__}"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            yield node, "neg", "drop unary minus"
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, int) and not isinstance(node.slice.value, bool):
            yield node, "index", f"[{node.slice.value}] -> [{node.slice.value + 1}]"
        elif isinstance(node, ast.Constant) and not isinstance(node.value, str):
            v = node.value
            if isinstance(v, bool):
                yield node, "const", f"{v} -> {not v}"
            elif isinstance(v, int):
                yield node, "const", f"{v} -> {v + 1}"
            elif isinstance(v, float):
                yield node, "const", f"{v} -> {v * 2 if v else 1.0}"


def _apply(tree: ast.AST, target: int) -> ast.AST:
    tree = copy.deepcopy(tree)
    for i, (node, kind, _) in enumerate(_sites(tree)):
        if i != target:
            continue
        if kind == "binop":
            node.op = _BINOP_SWAP[type(node.op)]()
        elif kind == "cmp":
            node.ops = [_CMP_SWAP[type(node.ops[0])]()]
        elif kind == "neg":  # -x -> +x
            node.op = ast.UAdd()
        elif kind == "index":
            node.slice = ast.Constant(node.slice.value + 1)
        elif kind == "const":
            v = node.value
            node.value = (not v) if isinstance(v, bool) else (v + 1 if isinstance(v, int) else (v * 2 if v else 1.0))
        return ast.fix_missing_locations(tree)
    raise IndexError(target)


def enumerate_mutants(root: Path, only: Optional[str] = None) -> List[Mutant]:
    out: List[Mutant] = []
    for path in sorted((root / TARGET).glob("*.py")):
        if only and path.name != only:
            continue
        tree = ast.parse(path.read_text())
        for i, (node, _, what) in enumerate(_sites(tree)):
            out.append(Mutant(str(path.relative_to(root)), i, getattr(node, "lineno", 0), what))
    return out


def _copy_tree(work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    keep = ["transfer", "tests", "pyproject.toml"]
    work.mkdir(parents=True)
    for k in keep:
        src = ROOT / k
        if src.is_dir():
            shutil.copytree(src, work / k, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, work / k)


def _run_tests(work: Path, tests: List[str], timeout: float) -> str:
    """'killed' | 'survived' | 'timeout' from a forked child running pytest in ``work``."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.chdir(work)
            sys.path.insert(0, str(work))
            for name in [m for m in sys.modules if m == "transfer" or m.startswith("transfer.") or m.startswith("tests")]:
                del sys.modules[name]
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            import transfer  # must be the scratch copy, not an installed /work tree

            if not str(Path(transfer.__file__).resolve()).startswith(str(work)):
                os._exit(98)
            rc = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests])
            os._exit(int(rc))
        except BaseException:
            os._exit(99)
    t0 = time.time()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            if code == 98:
                return "wrong-import"
            return "survived" if code == 0 else "killed"
        if time.time() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)


def fingerprint(root: Path) -> str:
    """sha256 over the mutated files and the tests that judge them: a record is reusable only
    while both are unchanged (mutant indices and outcomes depend on them)."""
    h = hashlib.sha256()
    for path in sorted((root / TARGET).glob("*.py")) + sorted((root / "tests" / "methods").rglob("*.py")) \
            + [root / "tests" / "conftest.py"]:
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _load_record(path: Optional[str], fp: str) -> dict:
    if not path or not Path(path).is_file():
        return {}
    rec = json.loads(Path(path).read_text())
    if not isinstance(rec, dict) or rec.get("fingerprint") != fp:
        raise SystemExit(f"{path} was recorded against other code or tests (fingerprint differs); "
                         f"move it away or pass another --json")
    return {(r["file"], r["index"]): r["outcome"] for r in rec["mutants"]}


def _save_record(path: Optional[str], fp: str, results: list) -> None:
    if not path:
        return
    tmp = Path(path).with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps({"fingerprint": fp, "mutants": [{**m.__dict__, "outcome": o} for m, o in results]},
                              indent=1))
    os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/mutwork", help="scratch copy of the repository (recreated)")
    ap.add_argument("--only", help="mutate only this file of transfer/methods (e.g. rules.py)")
    ap.add_argument("--limit", type=int, default=0, help="stop after this many mutants (0: all)")
    ap.add_argument("--pick", help="comma-separated FILE#INDEX (as --list prints) to run only those")
    ap.add_argument("--stride", type=int, default=1, help="run every k-th mutant only (a deterministic sample)")
    ap.add_argument("--offset", type=int, default=0,
                    help="start the stride at this mutant (--stride 3 --offset 1: the third not sampled by offset 0)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant; a timeout counts as killed")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--json", help="record every mutant's outcome here as it lands (rerun to resume)")
    args = ap.parse_args(argv)

    mutants = enumerate_mutants(ROOT, args.only)
    if args.pick:
        want = {tuple(p.rsplit("#", 1)) for p in args.pick.split(",")}
        mutants = [m for m in mutants if (Path(m.file).name, str(m.index)) in want or (m.file, str(m.index)) in want]
    mutants = mutants[args.offset::max(1, args.stride)]
    if args.limit:
        mutants = mutants[:args.limit]
    if args.list:
        for m in mutants:
            print(f"{m.file}:{m.line}  #{m.index}  {m.what}")
        print(f"{len(mutants)} mutants")
        return 0

    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TRANSFER_TEST_THREADS="1")
    import torch  # noqa: F401  (imported once, inherited by every forked child)
    import pytest  # noqa: F401

    torch.set_num_threads(1)
    work = Path(args.work).resolve()
    _copy_tree(work)
    base = _run_tests(work, TESTS, args.timeout * 3)
    if base != "survived":
        print(f"the unmutated tests do not pass in {work} ({base}); nothing to measure", file=sys.stderr)
        return 2

    fp = fingerprint(ROOT)
    done = _load_record(args.json, fp)
    results = [(m, done[(m.file, m.index)]) for m in mutants if (m.file, m.index) in done]
    if results:
        print(f"resuming: {len(results)} of {len(mutants)} mutants already recorded in {args.json}", flush=True)
    originals = {}
    try:
        for k, m in enumerate(mutants):
            if (m.file, m.index) in done:
                continue
            path = work / m.file
            if m.file not in originals:
                originals[m.file] = path.read_text()
            src = originals[m.file]
            try:
                path.write_text(ast.unparse(_apply(ast.parse(src), m.index)) + "\n")
                outcome = _run_tests(work, TESTS, args.timeout)
            finally:
                path.write_text(src)
            results.append((m, outcome))
            _save_record(args.json, fp, results)
            print(f"[{k + 1}/{len(mutants)}] {outcome:8s} {m.file}:{m.line} {m.what}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; partial score below", file=sys.stderr)
    finally:
        for f, src in originals.items():
            (work / f).write_text(src)

    killed = sum(o != "survived" for _, o in results)
    n = len(results)
    print(f"\nmutation score: {killed}/{n} killed ({100.0 * killed / max(n, 1):.1f} %)")
    survivors = [m for m, o in results if o == "survived"]
    if survivors:
        print("survivors:")
        for m in survivors:
            print(f"  {m.file}:{m.line}  #{m.index}  {m.what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
