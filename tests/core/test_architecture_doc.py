"""``docs/architecture.md`` stays honest (issue 16, item 6): its how-to blocks are executed here,
each in a fresh namespace, and what they register is checked to register and run -- the method
trains 2 steps, the task runs 2 iterations on its generated data, the engine is selected and runs,
the format's reader reads a checkpoint written in it. Registrations are undone afterwards."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterator

import pytest
import torch

from converters import read_checkpoint
from converters.formats import BY_NAME, LAYOUTS
from tests.conftest import ROOT, tiny_overrides
from transfer.config import load_config
from transfer.engines import ENGINES, select_engine
from transfer.methods import METHODS
from transfer.sources import random_backbone
from transfer.tasks import TASKS, run_task
from transfer.trainer import Trainer

DOC = ROOT / "docs" / "architecture.md"
_HOWTO = re.compile(r"<!-- howto: (\w+) -->\s*```python\n(.*?)```", re.S)
_RECIPE = re.compile(r"```yaml\n(# align .*?)```", re.S)


def howtos() -> Dict[str, str]:
    return {name: code for name, code in _HOWTO.findall(DOC.read_text())}


def run_block(name: str) -> None:
    code = howtos()[name]
    exec(compile(code, f"{DOC}#howto-{name}", "exec"), {"__name__": f"howto_{name}"})


@pytest.fixture
def undo() -> Iterator[None]:
    """Remove whatever a block registered, so other tests see the registries as they were."""
    before = {reg: set(reg.names()) for reg in (METHODS, TASKS, ENGINES)}
    layouts = list(LAYOUTS)
    yield
    for reg, names in before.items():
        for n in set(reg.names()) - names:
            del reg._items[n]
    for layout in LAYOUTS[len(layouts):]:
        BY_NAME.pop(layout.name, None)
    LAYOUTS[:] = layouts


def test_the_doc_has_the_four_howtos():
    assert set(howtos()) == {"method", "task", "engine", "format"}


def test_howto_method_registers_and_trains(undo, tmp_path):
    run_block("method")
    assert "align" in METHODS
    cfg = load_config(None, tiny_overrides(tmp_path, name="align", **{"method.name": "align", "optim.max_steps": 2}))
    tr = Trainer(cfg, device="cpu", quiet=True)
    out = tr.fit()
    tr.close()
    assert tr.step == 2, out
    assert (tmp_path / "align" / "backbone.safetensors").is_file()
    recipe = tmp_path / "align_fmnist.yaml"  # the doc's recipe loads and validates with the new method
    recipe.write_text(_RECIPE.search(DOC.read_text()).group(1))
    m = load_config(str(recipe))["method"]
    assert (m["name"], m["form"], m["momentum"]) == ("align", "grad", True)


def test_howto_task_registers_and_runs(undo, tmp_path):
    run_block("task")
    torch.set_num_threads(1)
    r = run_task("few_shapes_seg", "random:resnet18:0.125", data=str(tmp_path / "data"),
                 out_dir=str(tmp_path / "out"), device="cpu")
    assert r["task"] == "few_shapes_seg" and r["engine"] == "embedded" and r["iters"] == 2
    assert r["num_train_images"] == 4 and (tmp_path / "out" / "results.json").is_file()


def test_howto_engine_is_selected_and_runs(undo, tmp_path):
    run_block("task")
    run_block("engine")
    task = TASKS.get("few_shapes_seg")
    e = ENGINES.get("logged")
    arch = {"depth": 18, "width": 0.125, "small": False}
    task.engines = ("logged", "embedded")  # a task lists the engine by name
    assert select_engine(task, "auto", arch) is e and select_engine(task, "logged", arch) is e
    assert select_engine(task, "auto", {**arch, "small": True}).name == "embedded"  # accepts() said no
    torch.set_num_threads(1)
    r = run_task("few_shapes_seg", "random:resnet18:0.125", data=str(tmp_path / "data"),
                 out_dir=str(tmp_path / "out"), device="cpu", engine="logged")
    assert r["engine"] == "logged" and r["iters"] == 2


def test_howto_format_reader_reads_what_it_wrote(undo, tmp_path):
    run_block("format")
    b = random_backbone("resnet18", 0.125, seed=3)
    net = {f"encoder.{k}": v for k, v in b.state_dict().items()}
    net["head.weight"] = torch.zeros(10, 64)
    path = tmp_path / "ckpt.pth"
    torch.save({"net": net, "epoch": 7}, path)
    sd, meta, report = read_checkpoint(path)
    assert meta["source_format"] == "netdict"
    want = {k: v for k, v in b.state_dict().items() if not k.endswith("num_batches_tracked")}  # not canonical
    assert set(sd) == set(want) and all(torch.equal(sd[k], v) for k, v in want.items())
    assert meta["arch"]["depth"] == 18
