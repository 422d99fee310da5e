"""Dependencies point one way (issue 16, item 1): every import -- module-level or inside a function
-- goes from a layer to the same layer or a lower one.

    core (transfer: model, checkpoint, backbones, methods, data, ...)
      <- converters <- model_zoo
      <- transfer.sources, probes, transfer.tasks, transfer.engines   (siblings: probes and tasks
         do not import each other)
      <- applications: transfer.study, transfer.demo*, the CLIs (transfer.cli, transfer.commands,
         */cli.py)

The modules are read with ``ast`` (nothing is imported), so a function-local import that would
close a cycle fails here as surely as a top-level one.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("transfer", "converters", "model_zoo", "probes")

# (prefix, layer): the longest matching prefix wins.
LAYERS: Dict[str, int] = {
    "transfer": 0,
    "converters": 1,
    "model_zoo": 2,
    "transfer.sources": 3, "probes": 3, "transfer.tasks": 3, "transfer.engines": 3,
    "transfer.study": 4, "transfer.demo": 4, "transfer.demo_report": 4, "transfer.cli": 4,
    "transfer.commands": 4, "transfer.__main__": 4, "converters.cli": 4, "model_zoo.cli": 4, "probes.cli": 4,
}
# Same-layer units that must not import each other (independent consumers of the layers below).
SIBLINGS = (("probes", "transfer.tasks"), ("probes", "transfer.engines"))


def _prefix(module: str, table) -> Optional[str]:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        p = ".".join(parts[:n])
        if p in table:
            return p
    return None


def layer(module: str) -> Optional[int]:
    p = _prefix(module, LAYERS)
    return None if p is None else LAYERS[p]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[Tuple[str, int]]:
    """(imported module, line) for every import statement in ``path``, resolved to absolute names."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for a in node.names:  # `from pkg import submodule`
                yield f"{target}.{a.name}", node.lineno


def all_modules() -> List[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def violations() -> List[str]:
    bad = []
    for path in all_modules():
        src = module_name(path)
        lo = layer(src)
        for target, line in imports(path):
            if target.split(".")[0] not in PACKAGES:
                continue
            hi = layer(target)
            where = f"{path.relative_to(ROOT)}:{line}: {src} -> {target}"
            if lo is not None and hi is not None and hi > lo:
                bad.append(f"{where} (layer {lo} imports layer {hi})")
            a, b = _prefix(src, dict.fromkeys(x for s in SIBLINGS for x in s)), _prefix(target, dict.fromkeys(x for s in SIBLINGS for x in s))
            if a and b and a != b and ((a, b) in SIBLINGS or (b, a) in SIBLINGS) and hi == lo:
                bad.append(f"{where} (siblings {a} and {b})")
    return bad


def test_imports_point_down_the_layers():
    bad = violations()
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_every_module_has_a_layer():
    assert all(layer(module_name(p)) is not None for p in all_modules())


@pytest.mark.parametrize("src,target,ok", [
    ("model_zoo.publisher", "probes.run", False),  # the cycle issue 16 removed
    ("transfer.checkpoint", "converters", False),
    ("transfer.tasks.detection", "probes.source", False),
    ("probes.run", "transfer.sources", True),
    ("model_zoo.cli", "probes.run", True),
    ("transfer.sources", "model_zoo", True),
])
def test_the_checker_itself(src, target, ok):
    lo, hi = layer(src), layer(target)
    sib = any({_prefix(src, dict.fromkeys(s)), _prefix(target, dict.fromkeys(s))} == set(s) for s in SIBLINGS)
    assert (hi <= lo and not sib) is ok


def test_relative_imports_are_resolved(tmp_path):
    pkg = tmp_path / "model_zoo"
    pkg.mkdir()
    f = pkg / "x.py"
    f.write_text("def f():\n    from ..probes import run\n    from . import store\n")
    globals()["ROOT"], old = tmp_path, ROOT
    try:
        got = {t for t, _ in imports(f)}
    finally:
        globals()["ROOT"] = old
    assert "probes.run" in got and "model_zoo.store" in got
