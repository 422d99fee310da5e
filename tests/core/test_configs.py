"""Recipes: one ImageNet and one Fashion-MNIST recipe per registered method, all valid, and found
from an installed (non-editable) wheel too."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from transfer.config import list_recipes, load_config
from transfer.methods import METHODS


@pytest.mark.parametrize("method", METHODS.names())
def test_each_method_has_both_recipes(method):
    for kind in ("in1k", "fmnist"):
        cfg = load_config(f"{method}_{kind}")
        assert cfg["method"]["name"] == method
        assert cfg["model"]["arch"] == ("resnet50" if kind == "in1k" else "small_resnet18")


def test_all_recipes_validate():
    for name in list_recipes():
        load_config(name)


def test_override_switching_method_drops_recipe_params():
    cfg = load_config("unigrad_fmnist", ["method.name=simclr"])
    assert cfg["method"] == {"name": "simclr", "form": None, "momentum": None, "params": {}}


@pytest.mark.slow
def test_recipes_found_from_installed_wheel(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(wheel_dir), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    whl = next(wheel_dir.glob("*.whl"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(whl)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import transfer.config as c, sys; assert c.__file__.startswith(sys.argv[1]), c.__file__; "
            "print(len(c.list_recipes())); c.load_config('unigrad_in1k')")
    r = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.strip()) == len(list_recipes())
