"""Every registered task against every registered engine (issue 16, item 2): a task or engine is
tested the moment it is registered. Combinations whose engine cannot run here are skipped with
the engine's own reason.

- task x engine: the one selection function picks a listed, available engine and refuses an
  unlisted one; the engine states its availability as ``None`` or a reason;
- task: its own split loader reads (or writes, for generated sets) non-empty splits, or, with
  its data absent, ``run_task`` raises :class:`TaskUnavailable` printing the layout;
- engine: one iteration of training and an evaluation on the first generated task of its kind,
  through the public ``transfer.tasks.run_task``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transfer.engines import ENGINES, Job, select_engine
from transfer.errors import TaskUnavailable, UserError
from transfer.tasks import TASKS, Splits, run_task

STANDARD = {"depth": 18, "width": 1.0, "small": False}
CKPT = "random:resnet18:0.125"  # the standard stem, narrow: what the engines run here
CKPT_FULL = "random:resnet18"  # for an engine that builds R18 only at width 1 (detectron2)
# Small sizes for whichever of these keys a task has (generated sets, schedules, models).
TINY = {
    "n_train": 4, "n_val": 2, "n_test": 2, "image_size": 64, "workers": 0, "progress": False, "report_images": 1,
    # detection
    "ims_per_batch": 2, "min_size_train": [64], "max_size": 64, "min_size_test": 64, "fpn_channels": 16,
    "box_head_dim": 16, "mask_head_dim": 8, "roi_batch_size_per_image": 16, "rpn_batch_size_per_image": 16,
    "checkpoint_period": 1,
    # segmentation
    "batch_size": 2, "crop_size": 32, "scale": None, "test_scale": None, "eval_limit": 2, "ckpt_every": 0,
}
PAIRS = [(t, e) for t in TASKS.names() for e in ENGINES.names() if TASKS.get(t).kind == ENGINES.get(e).kind]


def tiny(task) -> dict:
    return {k: v for k, v in TINY.items() if k in task.settings}


def generated(task, where: Path) -> bool:
    """True when the task writes its data on first use (it is then "found" at any new folder)."""
    return task.locate(str(where)) is not None


@pytest.mark.parametrize("task,engine", PAIRS)
def test_selection(task, engine):
    t, e = TASKS.get(task), ENGINES.get(engine)
    why = e.available()
    assert why is None or (isinstance(why, str) and why), "an unavailable engine must say why"
    if engine not in t.engines:
        with pytest.raises(UserError, match="runs on"):
            select_engine(t, engine, STANDARD)
        return
    if why is not None:
        pytest.skip(f"{engine}: {why}")
    assert select_engine(t, engine, STANDARD) is e
    assert e.accepts(STANDARD) is None


@pytest.mark.parametrize("task", TASKS.names())
def test_task_is_data(task, tmp_path):
    t = TASKS.get(task)
    assert t.engines and all(e in ENGINES and ENGINES.get(e).kind == t.kind for e in t.engines)
    assert t.load_splits is not None and t.runner is not None
    absent = tmp_path / "absent"
    if not generated(t, absent):
        with pytest.raises(TaskUnavailable, match="expected layout"):
            run_task(task, CKPT, data=str(absent), out_dir=str(tmp_path / "out"))
        return
    s = t.resolve_settings(tiny(t))
    sp = t.load_splits(absent, s, tmp_path / "out", lambda m: None)
    assert isinstance(sp, Splits)
    for split in (sp.train, sp.test):  # detection splits hold image records, segmentation sets are sized
        assert len(getattr(split, "images", split)) > 0


def _engine_cases():
    for e in ENGINES.names():
        task = next((t for t in TASKS.names() if e in TASKS.get(t).engines and t.startswith("shapes_")), None)
        yield pytest.param(e, task, id=e)


@pytest.mark.parametrize("engine,task", list(_engine_cases()))
def test_engine_runs(engine, task, tmp_path):
    why = ENGINES.get(engine).available()
    if why is not None:
        pytest.skip(f"{engine}: {why}")
    assert task is not None, f"engine {engine}: no generated task lists it, so nothing here can run it"
    torch.set_num_threads(1)
    t = TASKS.get(task)
    # the narrow backbone unless the engine refuses it (detectron2 builds R18 only at width 1)
    ckpt = CKPT if ENGINES.get(engine).accepts({"depth": 18, "small": False, "width": 0.125}) is None else CKPT_FULL
    r = run_task(task, ckpt, data=str(tmp_path / "data"), out_dir=str(tmp_path / "out"), max_iter=1, device="cpu",
                 engine=engine, **tiny(t))
    assert r["task"] == task and r["engine"] == engine
    assert (tmp_path / "out" / "results.json").is_file()


def test_auto_skips_an_engine_that_cannot_build_the_backbone(monkeypatch):
    from transfer.engines.base import Engine, no_small_stem

    from transfer.registry import Registry

    reg: Registry = Registry("engine")
    full = Engine("full", "seg", check=lambda: (True, ""), run=lambda job: {}, accepts=no_small_stem)
    any_ = Engine("any", "seg", check=lambda: (True, ""), run=lambda job: {})
    gone = Engine("gone", "seg", check=lambda: (False, "not installed"), run=lambda job: {})
    for e in (gone, full, any_):
        reg.register(e.name)(e)
    monkeypatch.setattr("transfer.engines.base.ENGINES", reg)
    task = TASKS.get("shapes_seg")
    monkeypatch.setattr(task, "engines", ("gone", "full", "any"))
    assert select_engine(task, "auto", STANDARD) is full
    assert select_engine(task, "auto", {**STANDARD, "small": True}) is any_
    with pytest.raises(UserError, match="small-image"):
        select_engine(task, "full", {**STANDARD, "small": True})
    with pytest.raises(TaskUnavailable, match="not installed"):
        select_engine(task, "gone", STANDARD)
    monkeypatch.setattr(task, "engines", ("gone",))
    with pytest.raises(TaskUnavailable, match="gone: not installed"):
        select_engine(task, "auto", STANDARD)
    assert Job  # the one run signature: Engine.run(job: Job)
