"""Helpers for the detection tests: tiny settings, a fake deepforest folder, detectron2 shims.

The shims exist for the ``detectron2-cdo`` 0.5 sdist route only (detectron2 0.5's Python code
built with ``ext_modules=[]``): a stand-in ``detectron2._C`` (its compiled ops are not needed by
the R-CNN paths the tests run) and Pillow's removed ``Image.LINEAR``. They live here, in test
code, never in the engine.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

TINY = {  # seconds on one CPU thread
    "fpn_channels": 16, "box_head_dim": 32, "mask_head_dim": 8, "min_size_train": [64], "max_size": 64,
    "min_size_test": 64, "ims_per_batch": 2, "workers": 0, "progress": False, "precise_bn": False,
    "rpn_batch_size_per_image": 32, "roi_batch_size_per_image": 32, "anchor_base": 8, "report_images": 2,
    "checkpoint_period": 1, "base_lr": 0.005,
}


def tiny(task_settings: dict, **extra) -> dict:
    s = dict(task_settings)
    s.update({k: v for k, v in TINY.items() if k in s})
    s.update(extra)
    return s


def write_fake_deepforest(root: Path, size: int = 80) -> Path:
    """A folder in the deepforest ``data/`` layout (PNG + VOC XML per image), from synthetic shapes:
    one large image (tiled) and a 'OSBS_029' tile held out."""
    import numpy as np

    from transfer.data.detection.shapes import make_image, voc_xml

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for name, sz in (("OSBS_029", size), ("SOAP_061", size), ("BIG", 2 * size)):
        pil, objs = make_image(rng, sz, max_shapes=4 if sz > size else 3)
        pil.save(root / f"{name}.png")
        (root / f"{name}.xml").write_text(voc_xml(f"{name}.tif", sz, sz, [{"name": "Tree", "box": o["box"]} for o in objs]))
    return root


def install_d2_shims() -> None:
    """Let detectron2-cdo 0.5 import on a modern stack (test code only)."""
    import PIL.Image

    if not hasattr(PIL.Image, "LINEAR"):
        PIL.Image.LINEAR = PIL.Image.BILINEAR  # removed in Pillow 10; detectron2 0.5 references it
    if "detectron2._C" not in sys.modules:
        try:
            import detectron2._C  # noqa: F401  (a real build: nothing to do)
            return
        except ImportError:
            pass
        stub = types.ModuleType("detectron2._C")

        def _missing(name):
            def f(*a, **k):
                raise NotImplementedError(f"detectron2._C.{name} is not built (test shim)")
            return f

        stub.get_compiler_version = lambda: "none (test shim)"
        stub.get_cuda_version = lambda: "none"
        stub.has_cuda = lambda: False
        def _getattr(name):
            if name.startswith("__"):  # module protocol (__file__, __path__, ...): absent, as usual
                raise AttributeError(name)
            return _missing(name)

        stub.__getattr__ = _getattr  # type: ignore[attr-defined]
        sys.modules["detectron2._C"] = stub
        try:
            import detectron2

            detectron2._C = stub  # type: ignore[attr-defined]
        except ImportError:
            del sys.modules["detectron2._C"]


def d2_importable():
    """(ok, reason) after the shims."""
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        return False, f"detectron2 not installed ({e}); CI installs it per scripts/install_detectron2.sh --cdo"
    install_d2_shims()
    from transfer.engines.det_detectron2 import available

    return available()
