"""detectron2 availability is decided by what the engine needs (issue 17 section 3): import the
training/modelling path and build + run the model. A build without ``detectron2._C`` is usable
when nothing on that path needs it; otherwise the reason names exactly what is missing and where.

The detectron2 trees here are tiny fakes written to tmp_path (detectron2 is not on PyPI); they
mirror the import structure of the real cases: current detectron2 (``_C`` only needed by
``evaluation/fast_eval_api.py``, which the engine does not use) and detectron2 0.5 (whose
``layers/deform_conv.py`` imports ``_C`` at import time)."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import transfer.engines.det_detectron2 as d2e

API = {
    "__init__.py": '__version__ = "9.9"\n',
    "checkpoint/__init__.py": "class DetectionCheckpointer:\n    pass\n",
    "config/__init__.py": """
        class CfgNode(dict):
            def __init__(self, d=None):
                super().__init__({k: CfgNode(v) if isinstance(v, dict) else v for k, v in (d or {}).items()})
            __getattr__ = dict.__getitem__
            def merge_from_other_cfg(self, other):
                self.update(other)
        def get_cfg():
            return CfgNode({"MODEL": {}})
        """,
    "data/__init__.py": "DatasetCatalog = {}\nMetadataCatalog = {}\n",
    "engine/__init__.py": "class DefaultTrainer:\n    pass\ndef launch(*a, **k):\n    pass\n",
    "layers/__init__.py": "def get_norm(norm, c):\n    return None\n",
    "modeling/__init__.py": """
        import torch
        BUILT = []
        class _M(torch.nn.Module):
            def forward(self, inputs):
                return [{"instances": None} for _ in inputs]
        def build_model(cfg):
            assert cfg["MODEL"]["MASK_ON"] is True and cfg["MODEL"]["DEVICE"] == "cpu"
            BUILT.append(cfg)
            return _M()
        """,
    "modeling/roi_heads/__init__.py": """
        class _Registry(dict):
            def register(self, cls):
                self[cls.__name__] = cls
        ROI_HEADS_REGISTRY = _Registry()
        class Res5ROIHeads:
            pass
        """,
    # current detectron2: only the C++ COCOeval needs the compiled ops, and nothing imports it here
    "evaluation/fast_eval_api.py": "from detectron2 import _C  # noqa\n",
}


@pytest.fixture
def fake_d2(tmp_path, monkeypatch):
    """``make(**overrides) -> None``: write a fake ``detectron2`` tree and put it first on sys.path."""
    saved = {k: v for k, v in sys.modules.items() if k == "detectron2" or k.startswith("detectron2.")}

    def make(**files):
        root = tmp_path / "site"
        for rel, text in {**API, **files}.items():
            p = root / "detectron2" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text))
        for k in list(sys.modules):
            if k == "detectron2" or k.startswith("detectron2."):
                del sys.modules[k]
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.setattr(d2e, "_AVAILABLE", None)

    yield make
    for k in list(sys.modules):
        if k == "detectron2" or k.startswith("detectron2."):
            del sys.modules[k]
    sys.modules.update(saved)


def test_a_build_without_compiled_ops_is_available_when_the_model_builds(fake_d2):
    fake_d2()
    ok, why = d2e.available()
    assert (ok, why) == (True, "")
    import detectron2.modeling as m

    assert len(m.BUILT) == 1  # it did build the model the engine configures
    with pytest.raises(ImportError):
        import detectron2._C  # noqa: F401


def test_compiled_ops_needed_at_import_are_named_with_the_module(fake_d2):
    fake_d2(**{"layers/deform_conv.py": "from detectron2 import _C\n",
               "layers/__init__.py": "from .deform_conv import *\ndef get_norm(norm, c):\n    return None\n",
               "engine/__init__.py": "import detectron2.layers\nclass DefaultTrainer:\n    pass\ndef launch():\n    pass\n"})
    ok, why = d2e.available()
    assert not ok
    assert "detectron2 9.9" in why and "detectron2._C" in why and "detectron2/layers/deform_conv.py:1" in why
    assert "INSTALL.md" in why


def test_compiled_ops_needed_by_the_model_are_named(fake_d2):
    fake_d2(**{"modeling/__init__.py": """
        def build_model(cfg):
            from detectron2 import _C
        """})
    ok, why = d2e.available()
    assert not ok and "building and running Mask R-CNN" in why and "detectron2._C" in why
    assert "detectron2/modeling/__init__.py:3" in why


def test_a_missing_dependency_is_named(fake_d2):
    fake_d2(**{"engine/__init__.py": "import fvcore_absent_xyz\n"})
    ok, why = d2e.available()
    assert not ok and "'fvcore_absent_xyz'" in why and "pip install fvcore_absent_xyz" in why


def test_a_library_mismatch_is_named(fake_d2):
    fake_d2(**{"data/__init__.py": "import PIL.Image\nLINEAR = PIL.Image.NO_SUCH_FILTER_XYZ\n"})
    ok, why = d2e.available()
    assert not ok and "NO_SUCH_FILTER_XYZ" in why and "detectron2/data/__init__.py:2" in why


def test_not_installed(fake_d2, monkeypatch):
    monkeypatch.setattr(d2e, "_AVAILABLE", None)
    monkeypatch.setitem(sys.modules, "detectron2", None)  # import fails as if absent
    ok, why = d2e.available()
    assert not ok and "detectron2 not importable" in why and "install_detectron2.sh" in why
