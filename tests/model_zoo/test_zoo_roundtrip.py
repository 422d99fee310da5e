"""publish -> list -> show -> get -> load, locally and over HTTP; ``zoo:NAME`` as ``--ckpt``."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torchvision

import model_zoo
from model_zoo.card import parse_front_matter
from transfer.checkpoint import read_export
from transfer.cli import main

from .conftest import make_run, weights_sha, write_json

CONVERTED = {"detectron2.pkl", "detectron2.yaml", "mmseg.pth", "mmseg_mm_config.py"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A zoo with a ResNet-18 published with ``--probe`` (k-NN + linear + few-shot run at publish time),
    besides an earlier k-NN report, transfer results and a stale report for other weights; and a
    small-stem ResNet-18 (no detectron2 / mmseg conversion possible, no results)."""
    import os

    root = tmp_path_factory.mktemp("zoo")
    old_cache = os.environ.get("TRANSFER_CACHE")
    os.environ["TRANSFER_CACHE"] = str(root / "cache")
    try:
        r18 = make_run(root / "runs" / "r18", "resnet18")
        sha = weights_sha(r18)
        assert main(["probe", "knn", "--ckpt", str(r18), "--data", "digits", "--out", str(r18 / "probes"),
                     "--no-cache", "--k", "10,20"]) == 0
        write_json(r18 / "transfer" / "voc_det" / "results.json",
                   {"task": "voc_det", "engine": "torchvision", "dataset": "voc2007", "split": "test",
                    "metrics": {"bbox": {"AP": 12.5, "AP50": 30.25}}, "weights_sha256": sha})
        write_json(r18 / "transfer" / "trees_det" / "results.json",  # the shape transfer.tasks.detection writes
                   {"task": "trees_det", "engine": "torchvision", "ckpt": {"spec": str(r18), "weights_sha256": sha},
                    "bbox": {"AP": 5.5, "AP50": 11.0}, "voc07_AP50": 9.0, "voc07_per_class": {"tree": 9.0},
                    "data": {"train": {"images": 8}, "test": {"images": 4}},
                    "schedule": {"max_iter": 30, "base_lr": 0.02}, "seconds": 3.2, "eval_only": False})
        write_json(r18 / "transfer" / "nuclei_seg" / "results.json",  # segmentation's shape, naming no weights
                   {"task": "nuclei_seg", "engine": "embedded", "ckpt": {"spec": "elsewhere"}, "data": "/d/nuclei",
                    "mIoU": 20.5, "aAcc": 80.0, "per_class_iou": {"bg": 90.0}, "settings": {"max_iter": 20},
                    "num_train_images": 10})
        stale = json.loads((r18 / "probes" / "knn.json").read_text())
        stale["source"]["weights_sha256"] = "0" * 64
        write_json(r18 / "old_probes" / "knn.json", stale)
        small = make_run(root / "runs" / "small", "small_resnet18", seed=1)
        z = root / "zoo"
        assert main(["zoo", "publish", str(r18), "--name", "r18-byol", "--zoo", str(z), "--probe"]) == 0
        assert main(["zoo", "publish", str(small), "--name", "small-byol", "--zoo", str(z)]) == 0
    finally:
        if old_cache is None:
            os.environ.pop("TRANSFER_CACHE", None)
        else:
            os.environ["TRANSFER_CACHE"] = old_cache
    return {"root": z, "r18": r18, "small": small, "sha": sha}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_list_and_index(zoo, capsys):
    assert main(["zoo", "list", "--zoo", str(zoo["root"])]) == 0
    out = capsys.readouterr().out
    assert "r18-byol" in out and "small-byol" in out and "resnet18" in out and "small_resnet18" in out
    index = json.loads((zoo["root"] / "index.json").read_text())
    assert set(index["models"]) == {"r18-byol", "small-byol"}
    r18 = index["models"]["r18-byol"]
    assert CONVERTED | {"backbone.safetensors", "README.md", "results.json", "config.yaml", "SHA256SUMS"} == set(r18["files"])
    assert "checkpoint.pt" not in r18["files"] and "log.jsonl" not in r18["files"]
    for fname, rec in r18["files"].items():  # the index hashes are the files' hashes
        assert _sha(zoo["root"] / "r18-byol" / fname) == rec["sha256"]
    # small stem: no detectron2 / mmseg files, and the reason is recorded
    small = index["models"]["small-byol"]
    assert not CONVERTED & set(small["files"]) and small["conversions"] == {"detectron2": None, "mmseg": None}


def test_show_prints_card_with_results_table(zoo, capsys):
    assert main(["zoo", "show", "r18-byol", "--zoo", str(zoo["root"])]) == 0
    card = capsys.readouterr().out
    fm = parse_front_matter(card)
    for key in ("license", "method", "form", "arch", "epochs", "datasets", "data", "model-index", "weights_sha256"):
        assert key in fm, key
    assert fm["method"] == "byol" and fm["arch"]["depth"] == 18 and fm["epochs"] == 2 and fm["license"] == "mit"
    assert fm["weights_sha256"] == zoo["sha"]
    assert "| protocol | dataset | split | metric | value |" in card
    assert "k-NN (weighted, DINO)" in card and "| voc2007 | test | bbox AP50 | 30.25 |" in card
    assert "| nuclei_seg: fine-tune, embedded engine, 20 iterations | nuclei | val | mIoU | 20.50 (unverified) |" in card
    assert "| trees_det: fine-tune, torchvision engine, 30 iterations | trees_det | test | bbox AP50 | 11.00 |" in card
    assert "voc07_AP50 | 9.00" in card
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in card.splitlines() if ln.startswith("| ")]
    transfer_metrics = {c[3] for c in cells if len(c) == 6 and c[5].startswith("`transfer/")}
    # only metrics: no per-class tables, schedule, settings, timings or image counts
    assert transfer_metrics == {"bbox AP", "bbox AP50", "voc07_AP50", "mIoU", "aAcc"}
    assert "`old_probes/knn.json` |" not in card  # the report for other weights was left out ...
    assert "old_probes/knn.json: results for other weights" in card  # ... and said so
    results = json.loads((zoo["root"] / "r18-byol" / "results.json").read_text())
    assert "probes/knn.json" in results["probes"] and "transfer/voc_det/results.json" in results["transfer"]
    assert len(fm["model-index"][0]["results"]) >= 9  # probes, bbox AP/AP50 x2, voc07_AP50, mIoU, aAcc
    # --probe: k-NN, linear and few-shot rows, each naming its protocol
    assert "linear (fast" in card and "few-shot 5-way 1-shot" in card
    assert (zoo["r18"] / "probes" / "report.json").is_file()
    assert main(["zoo", "show", "small-byol", "--zoo", str(zoo["root"])]) == 0
    card = capsys.readouterr().out
    assert "small-image stem" in card and "detectron2: not written (" in card and "No results" in card


def test_get_and_load(zoo, tmp_path, capsys):
    out = tmp_path / "got"
    assert main(["zoo", "get", "r18-byol", "--zoo", str(zoo["root"]), "-o", str(out)]) == 0
    assert "sha256 verified" in capsys.readouterr().out
    for f in (zoo["root"] / "r18-byol").iterdir():
        assert _sha(out / f.name) == _sha(f)
    assert model_zoo.verify_folder(out)  # the copy checks against its own SHA256SUMS too
    sd, _ = read_export(zoo["r18"] / "backbone.safetensors")
    model = model_zoo.load("r18-byol", zoo=str(zoo["root"]))
    assert type(model) is torchvision.models.ResNet
    msd = model.state_dict()
    assert all(torch.equal(msd[k], v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)
    # small stem: still a torchvision ResNet, with the 3x3 stride-1 stem and no max-pool
    small = model_zoo.load("small-byol", zoo=str(zoo["root"]))
    assert type(small) is torchvision.models.ResNet and small.conv1.kernel_size == (3, 3)
    assert isinstance(small.maxpool, torch.nn.Identity)
    bb, meta = model_zoo.load_backbone("small-byol", zoo=str(zoo["root"]))
    x = torch.randn(2, 3, 8, 8)
    small.fc = torch.nn.Identity()
    bb.eval()
    assert torch.allclose(small(x), bb(x), atol=1e-5)


def test_get_over_http(zoo, http_zoo, tmp_path, monkeypatch, capsys):
    url = http_zoo(zoo["root"])
    assert main(["zoo", "list", "--zoo", url]) == 0
    assert "r18-byol" in capsys.readouterr().out
    assert main(["zoo", "show", "small-byol", "--zoo", url]) == 0
    assert "## Results" in capsys.readouterr().out
    out = tmp_path / "http-got"
    assert main(["zoo", "get", "r18-byol", "--zoo", url, "-o", str(out)]) == 0
    for f in (zoo["root"] / "r18-byol").iterdir():
        assert _sha(out / f.name) == _sha(f)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    # default destination: the download cache; load() goes through the same verified get
    monkeypatch.setenv("TRANSFER_ZOO", url)
    model = model_zoo.load("small-byol")
    assert type(model) is torchvision.models.ResNet
    assert list((tmp_path / "cache" / "zoo-downloads").glob("*/small-byol/backbone.safetensors"))
    with pytest.raises(Exception, match="read-only"):
        model_zoo.publish(zoo["small"], "x", zoo=url)


def test_zoo_name_as_ckpt(zoo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFER_ZOO", str(zoo["root"]))
    out = tmp_path / "probe"
    assert main(["probe", "knn", "--ckpt", "zoo:r18-byol", "--data", "digits", "--out", str(out),
                 "--no-cache", "--k", "10"]) == 0
    rep = json.loads((out / "knn.json").read_text())
    assert rep["source"]["spec"] == "zoo:r18-byol"
    assert rep["source"]["weights_sha256"] == zoo["sha"]
    assert main(["convert", "zoo:r18-byol", "--to", "torchvision", "-o", str(tmp_path / "tv.pth"), "-q"]) == 0
    assert (tmp_path / "tv.pth").is_file()
    capsys.readouterr()
    assert main(["probe", "knn", "--ckpt", "zoo:nope", "--data", "digits", "--out", str(out)]) == 2
    assert "no model 'nope'" in capsys.readouterr().err
