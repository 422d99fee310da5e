"""detectron2 / mmsegmentation key layouts vs. fixtures taken from their source (and, where the
library is importable, regenerated from the real backbone and compared)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from converters import WRITERS
from converters.canonical import COUNTER

from .conftest import tv_state
from .layouts import canon
from .fixtures import make_layout_fixtures as gen

FIX = Path(__file__).resolve().parent / "fixtures"
KIND = {"detectron2": "detectron2", "mmseg": "mmseg"}


def _fixture(kind: str) -> dict:
    return json.loads((FIX / f"{kind}_resnet_layout.json").read_text())


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("kind", sorted(KIND))
def test_writer_matches_fixture(kind, depth):
    fix = _fixture(kind)
    assert fix["_source"]["commit"] and fix["_source"]["file"]
    want = {k: tuple(v) for k, v in fix[f"resnet{depth}"].items() if not k.endswith(COUNTER)}
    converted, _ = WRITERS.get(kind).convert(canon(tv_state(depth)), {"depth": depth, "small": False, "width": 1.0})
    prefix = "backbone." if kind == "mmseg" else ""
    got = {k[len(prefix):]: tuple(v.shape) for k, v in converted.items()}
    assert got == want


@pytest.mark.parametrize("kind", sorted(KIND))
def test_fixture_is_current(kind):
    """The committed fixture equals a fresh derivation; with the library importable, equals the real module."""
    real = importlib.util.find_spec(KIND[kind]) is not None
    fresh = gen.build(kind, real=False)
    fix = _fixture(kind)
    assert {k: v for k, v in fresh.items() if k != "_source"} == {k: v for k, v in fix.items() if k != "_source"}
    if not real:
        pytest.skip(f"{kind} not importable: fixture not regenerated from the real backbone")
    live = gen.build(kind, real=True)  # pragma: no cover - needs the library
    assert {k: v for k, v in live.items() if k != "_source"} == {k: v for k, v in fix.items() if k != "_source"}
