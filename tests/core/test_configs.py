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


# ---------------------------------------------------------------- recipe sets built from bases
import re  # noqa: E402

import yaml  # noqa: E402

from transfer.config import DEFAULTS, SCHEMA, load_recipe, recipe_dir, recipe_groups  # noqa: E402
from transfer.errors import UserError  # noqa: E402

KEEP_AS_IS = ("demo_fmnist", "fmnist")  # standalone recipes owned elsewhere: not on a base


def _sections(cfg, drop=("name", "method")):
    return {k: v for k, v in cfg.items() if k not in drop}


def test_fmnist_method_recipes_are_the_base_plus_a_method():
    base = load_config(str(recipe_dir() / "base" / "fmnist.yaml"))
    names = [n for n in list_recipes() if n.endswith("_fmnist") and n not in KEEP_AS_IS]
    assert len(names) == len(METHODS.names())
    for n in names:
        raw = yaml.safe_load((recipe_dir() / f"{n}.yaml").read_text())
        assert set(raw) == {"_base", "method"}, n  # states only what differs
        assert _sections(load_config(n)) == _sections(base), n


def test_in1k_set_is_one_recipe_every_method_in_grad_form_with_momentum():
    cfgs = {n: load_config(n) for n in list_recipes() if n.endswith("_in1k")}
    assert {c["method"]["name"] for c in cfgs.values()} == set(METHODS.names())
    ref = _sections(cfgs["unigrad_in1k"])
    for n, c in cfgs.items():
        assert c["method"]["form"] == "grad" and c["method"]["momentum"] is True, n
        assert _sections(c) == ref, n
    # UniGrad's values (fundamentalvision/UniGrad configs/unigrad.py)
    o = ref["optim"]
    assert (o["name"], o["base_lr"], o["batch_size"], o["epochs"], o["warmup_epochs"], o["weight_decay"]) == \
        ("sgd", 0.05, 1024, 100, 5, 1e-4)
    assert ref["ema"]["base"] == 0.996 and ref["model"]["proj_dim"] == 2048
    assert cfgs["unigrad_in1k"]["method"]["params"] == {"lambd": 100.0, "rho": 0.99}


@pytest.mark.parametrize("name, expect", [
    ("moco_paper", {"method.params.queue_size": 65536, "method.params.tau": 0.2, "ema.base": 0.999, "ema.end": 0.999,
                    "model.proj_hidden": 2048, "model.proj_dim": 128, "optim.base_lr": 0.03, "optim.batch_size": 256}),
    ("simclr_paper", {"optim.name": "lars", "method.params.tau": 0.1, "optim.batch_size": 4096, "optim.weight_decay": 1e-6}),
    ("byol_paper", {"optim.name": "lars", "model.pred_hidden": 4096, "ema.base": 0.996, "model.proj_hidden": 4096}),
    ("simsiam_paper", {"optim.batch_size": 512, "optim.warmup_epochs": 0, "optim.base_lr": 0.05, "method.momentum": False}),
    ("barlow_twins_paper", {"optim.name": "lars", "model.proj_hidden": 8192, "model.proj_dim": 8192,
                            "optim.weight_decay": 1e-6, "method.params.lambd": 0.0051}),
    ("vicreg_paper", {"optim.name": "lars", "model.proj_hidden": 8192, "model.proj_dim": 8192, "optim.weight_decay": 1e-6}),
    ("directpred_paper", {"method.params.rho": 0.3, "method.params.freq": 1, "optim.weight_decay": 4e-4}),
])
def test_paper_recipes_hold_the_published_values(name, expect):
    cfg = load_config(name)
    for key, want in expect.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == want, (name, key, node)


def _leaf_lines(text):
    """(indent, key, line) for every ``key: scalar`` line (a value on the line, not a section opener)."""
    for line in text.splitlines():
        m = re.match(r"^(\s*)([A-Za-z_]+):\s*([^#\s][^#]*?)?\s*(#.*)?$", line)
        if m and m.group(3) is not None:
            yield len(m.group(1)), m.group(2), line


@pytest.mark.parametrize("name", [n for n in list_recipes() if n.endswith("_paper")])
def test_paper_recipes_cite_their_sources(name):
    text = (recipe_dir() / f"{name}.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert re.search(r"Sources?: .*[A-Za-z0-9-]+/[A-Za-z0-9_.-]+ ", header), f"{name}: no 'Sources: owner/repo file' header"
    for indent, key, line in _leaf_lines(text):
        if key in ("_base", "name", "form"):
            continue  # the method's identity and form are what the file is named after
        assert "#" in line, f"{name}: value without a citation comment: {line.strip()!r}"


def test_list_shows_both_sets_grouped_with_descriptions(capsys):
    from transfer.cli import main

    assert main(["pretrain", "--list"]) == 0
    out = capsys.readouterr().out
    titles = [t for t, _ in recipe_groups()]
    assert titles[0].startswith("UniGrad's fair comparison") and titles[1].startswith("each method's own published")
    i_in1k, i_paper = out.index(titles[0]), out.index(titles[1])
    for n in list_recipes():
        line = next(l for l in out.splitlines() if l.strip().startswith(n + " "))
        assert len(line.split(None, 1)) == 2, f"{n} has no description"
        at = out.index(line)
        if n.endswith("_in1k"):
            assert i_in1k < at < i_paper
        if n.endswith("_paper"):
            assert at > i_paper
    assert "base/" not in " ".join(l.split()[0] for l in out.splitlines() if l.startswith("  "))


# ---------------------------------------------------------------- the _base mechanism
def _w(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_is_overridden_by_the_recipe_and_chains(tmp_path):
    _w(tmp_path / "b" / "root.yaml", "optim: {base_lr: 0.1, epochs: 3}\nmodel: {proj_dim: 64}\n"
                                     "method: {name: simclr, params: {tau: 0.3}}\n")
    _w(tmp_path / "mid.yaml", "_base: b/root\noptim: {epochs: 7}\n")
    r = _w(tmp_path / "top.yaml", "_base: mid.yaml\nmethod: {params: {tau: 0.5}}\n")
    cfg = load_config(str(r))
    assert cfg["name"] == "top"
    assert (cfg["optim"]["base_lr"], cfg["optim"]["epochs"], cfg["model"]["proj_dim"]) == (0.1, 7.0, 64)
    assert cfg["method"]["name"] == "simclr" and cfg["method"]["params"] == {"tau": 0.5}
    assert cfg["optim"]["momentum"] == DEFAULTS["optim"]["momentum"]  # untouched keys: the defaults
    # a recipe naming another method does not inherit the base's method parameters
    r2 = _w(tmp_path / "other.yaml", "_base: mid\nmethod: {name: unigrad}\n")
    assert load_config(str(r2))["method"]["params"] == {}
    assert "_base" not in load_recipe(r)


def test_base_resolves_builtin_names_from_anywhere(tmp_path):
    r = _w(tmp_path / "mine.yaml", "_base: simclr_fmnist\noptim: {epochs: 1}\n")
    cfg = load_config(str(r))
    assert cfg["optim"]["epochs"] == 1 and _sections(cfg, ("name", "optim")) == _sections(load_config("simclr_fmnist"), ("name", "optim"))


def test_base_cycle_is_an_error_naming_the_files(tmp_path):
    _w(tmp_path / "a.yaml", "_base: b\n")
    _w(tmp_path / "b.yaml", "_base: a\n")
    with pytest.raises(UserError) as e:
        load_config(str(tmp_path / "a.yaml"))
    msg = str(e.value)
    assert "cycle" in msg and "a.yaml" in msg and "b.yaml" in msg and "\n" not in msg
    _w(tmp_path / "self.yaml", "_base: self\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(str(tmp_path / "self.yaml"))


def test_missing_base_is_an_error_naming_the_file_and_the_reference(tmp_path):
    r = _w(tmp_path / "child.yaml", "_base: nowhere/gone\n")
    with pytest.raises(UserError) as e:
        load_config(str(r))
    msg = str(e.value)
    assert "child.yaml" in msg and "'nowhere/gone'" in msg and "not found" in msg and "\n" not in msg
    with pytest.raises(UserError, match=r"_base must be a recipe name"):
        load_config(str(_w(tmp_path / "bad.yaml", "_base: [1, 2]\n")))


# ---------------------------------------------------------------- typed schema and range checks
def _leaves(d, pre=""):
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("params", "aug"):
            yield from _leaves(v, f"{pre}{k}.")
        elif k not in ("params", "aug"):
            yield f"{pre}{k}"


def test_schema_types_every_default_key():
    assert set(_leaves(DEFAULTS)) == set(SCHEMA)
    for key in SCHEMA:  # every default satisfies its own schema entry
        node = DEFAULTS
        for part in key.split("."):
            node = node[part]
        SCHEMA[key].check(key, node)


def test_validate_stores_typed_values():
    cfg = load_config("simclr_fmnist", ["optim.epochs=2", "ema.end=1", "optim.weight_decay=0"])
    assert type(cfg["optim"]["epochs"]) is float and type(cfg["ema"]["end"]) is float
    assert type(cfg["optim"]["weight_decay"]) is float and type(cfg["optim"]["batch_size"]) is int
    assert type(cfg["data"]["aug"]["scale_min"]) is float
    # YAML 1.1 reads 1e-4 / 1e30 (no dot) as strings: they are numbers here, as float() read them before
    cfg = load_config("simclr_fmnist", ["optim.weight_decay=1e-4", "optim.base_lr=1e30"])
    assert cfg["optim"]["weight_decay"] == 1e-4 and cfg["optim"]["base_lr"] == 1e30


BAD = [
    ("optim.max_steps=-1", "optim.max_steps"), ("optim.max_steps=0", "optim.max_steps"),
    ("optim.max_steps=2.5", "optim.max_steps"),
    ("ema.base=2", "ema.base"), ("ema.base=-0.1", "ema.base"), ("ema.end=1.5", "ema.end"), ("ema.end=-1", "ema.end"),
    ("model.proj_dim=0", "model.proj_dim"), ("model.proj_dim=-8", "model.proj_dim"), ("model.proj_dim=12.5", "model.proj_dim"),
    ("model.proj_hidden=0", "model.proj_hidden"), ("model.proj_layers=0", "model.proj_layers"),
    ("model.pred_hidden=-1", "model.pred_hidden"), ("model.width=0", "model.width"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay"), ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
    ("optim.warmup_epochs=500", "optim.warmup_epochs"),
    ("optim.momentum=5", "optim.momentum"), ("optim.momentum=1", "optim.momentum"), ("optim.momentum=-0.5", "optim.momentum"),
    ("seed=1.5", "seed"), ("seed=true", "seed"), ("seed=-1", "seed"), ("seed=abc", "seed"),
    ("optim.batch_size=12.5", "optim.batch_size"), ("optim.batch_size=0", "optim.batch_size"),
    ("optim.batch_size=true", "optim.batch_size"), ("optim.batch_size=big", "optim.batch_size"),
    ("optim.epochs=0", "optim.epochs"), ("optim.epochs=.nan", "optim.epochs"), ("optim.epochs=nan", "optim.epochs"),
    ("optim.base_lr=lots", "optim.base_lr"), ("optim.base_lr=0", "optim.base_lr"),
    ("optim.base_lr=-0.1", "optim.base_lr"), ("optim.min_lr_ratio=2", "optim.min_lr_ratio"),
    ("optim.lars_eta=0", "optim.lars_eta"), ("optim.name=adam", "optim.name"),
    ("data.size=0", "data.size"), ("data.workers=-1", "data.workers"), ("data.load_size=1.5", "data.load_size"),
    ("data.aug.p_blur=2", "data.aug.p_blur"), ("data.aug.scale_min=0", "data.aug.scale_min"),
    ("data.aug.hue=-1", "data.aug.hue"), ("data.aug.ratio_min=2", "data.aug.ratio_min"),
    ("model.sync_bn=1", "model.sync_bn"), ("method.momentum=yesplease", "method.momentum"),
    ("method.form=both", "method.form"),
    ("train.ckpt_every=0", "train.ckpt_every"), ("train.log_every=1.5", "train.log_every"),
    ("train.knn_every=-1", "train.knn_every"), ("train.knn_k=0", "train.knn_k"), ("train.knn_t=0", "train.knn_t"),
    ("train.threads=0", "train.threads"), ("train.amp=sometimes", "train.amp"), ("train.progress=2", "train.progress"),
    ("train.dtype=float16", "train.dtype"), ("train.knn_split=train", "train.knn_split"), ("train.knn_val=0", "train.knn_val"),
]


@pytest.mark.parametrize("override, key", BAD, ids=[o for o, _ in BAD])
def test_bad_values_are_rejected_naming_the_key_and_value(override, key):
    with pytest.raises(UserError) as e:
        load_config("simclr_fmnist", [override])
    msg = str(e.value)
    assert f"'{key}'" in msg, msg
    val = override.split("=", 1)[1]
    assert val.lstrip(".").lower() in msg.lower(), msg
    assert "\n" not in msg


@pytest.mark.parametrize("override", ["optim.max_steps=null", "optim.max_steps=1", "ema.base=0", "ema.end=1",
                                      "optim.momentum=0", "optim.weight_decay=0", "optim.warmup_epochs=0",
                                      "seed=0", "train.amp=true", "train.amp=auto", "train.threads=2",
                                      "train.knn_every=0", "optim.min_lr_ratio=0"])
def test_edge_values_in_range_are_accepted(override):
    load_config("simclr_fmnist", [override])


def test_probe_fewshot_refuses_zero_episodes(capsys):
    from transfer.cli import main

    for bad in ("0", "-3", "x"):
        with pytest.raises(SystemExit) as e:
            main(["probe", "fewshot", "some.safetensors", "--episodes", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--episodes" in err and "positive integer" in err and repr(bad) in err


def test_other_method_with_a_parameter_override_drops_the_recipes_parameters():
    """Switching the method resets the recipe's method section even when a parameter of the new
    method is also set: the demo recipe's SimCLR ``tau`` used to leak into BYOL's parameters."""
    from transfer.config import load_config

    m = load_config("demo_fmnist", ["method.name=byol", "method.params.rho=0.9"])["method"]
    assert m["name"] == "byol" and m["params"] == {"rho": 0.9}
