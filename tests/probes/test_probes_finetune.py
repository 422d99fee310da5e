"""``transfer probe finetune``: the labelled subset (fraction, class balance, seed, refusals), the
fine-tuning itself (weights move, the source does not) and the report, on tiny data."""
import json

import pytest
import torch

from probes.finetune import (FinetuneConfig, LabelSpec, carve_validation, finetune_backbone, new_head,
                             parse_labels, select_labelled)
from transfer.sources import random_backbone
from transfer.cli import main
from transfer.data import build_dataset
from transfer.errors import UserError


def balanced_labels(per_class=100, classes=10):
    return torch.arange(classes).repeat_interleave(per_class)[torch.randperm(per_class * classes,
                                                                            generator=torch.Generator().manual_seed(1))]


# ------------------------------------------------------------------ --labels parsing
@pytest.mark.parametrize("text,kind,value", [("1%", "fraction", 0.01), ("10%", "fraction", 0.1),
                                             (" 2.5% ", "fraction", 0.025), ("100%", "fraction", 1.0),
                                             ("25", "per_class", 25), ("3/class", "per_class", 3)])
def test_parse_labels_forms(text, kind, value):
    spec = parse_labels(text)
    assert spec.kind == kind and spec.value == pytest.approx(value)


@pytest.mark.parametrize("text,needle", [("0%", "above 0%"), ("-1%", "above 0%"), ("150%", "at most 100%"),
                                         ("nan%", "above 0%"), ("abc%", "not a percentage"), ("0", "at least 1"),
                                         ("-3", "at least 1"), ("abc", "expected a percentage"),
                                         ("0.01", "expected a percentage"), ("", "expected a percentage"),
                                         ("missing/list.txt", "file not found")])
def test_parse_labels_refuses_bad_values_naming_them(text, needle):
    with pytest.raises(UserError) as e:
        parse_labels(text)
    msg = str(e.value)
    assert needle in msg and repr(text) in msg and "\n" not in msg


def test_parse_labels_file_and_tag(tmp_path):
    f = tmp_path / "1percent.txt"
    f.write_text("3\n")
    assert parse_labels(str(f)) == LabelSpec("file", str(f), str(f))
    assert parse_labels("1%").tag == "1pct" and parse_labels("0.5%").tag == "0p5pct"
    assert parse_labels("5").tag == "5perclass" and parse_labels(str(f)).tag == "file-1percent"


# ------------------------------------------------------------------ the labelled subset
@pytest.mark.parametrize("text,total", [("1%", 10), ("10%", 100), ("3.5%", 35), ("100%", 1000)])
def test_fraction_is_respected_and_class_balanced(text, total):
    y = balanced_labels()
    idx, info = select_labelled(y, parse_labels(text), seed=0, num_classes=10)
    assert idx.numel() == total == info["n_labelled"] and idx.unique().numel() == total
    counts = torch.bincount(y[idx], minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.min() >= 1
    assert info["per_class"] == counts.tolist()


def test_balance_on_imbalanced_classes_and_per_class_counts():
    y = torch.cat([torch.full((n,), c) for c, n in enumerate([500, 300, 100, 50, 50])])
    idx, _ = select_labelled(y, parse_labels("5%"), seed=3, num_classes=5)  # 50 images: 10 per class
    assert torch.bincount(y[idx], minlength=5).tolist() == [10] * 5
    idx, info = select_labelled(y, parse_labels("60"), seed=3, num_classes=5)
    assert torch.bincount(y[idx], minlength=5).tolist() == [60, 60, 60, 50, 50]
    assert "fewer train images than requested" in info["warnings"][0]


def test_selection_is_deterministic_from_the_seed_and_nested():
    y = balanced_labels()
    a, _ = select_labelled(y, parse_labels("10%"), seed=5, num_classes=10)
    b, _ = select_labelled(y, parse_labels("10%"), seed=5, num_classes=10)
    c, _ = select_labelled(y, parse_labels("10%"), seed=6, num_classes=10)
    assert torch.equal(a, b) and not torch.equal(a, c)
    small, _ = select_labelled(y, parse_labels("2%"), seed=5, num_classes=10)
    assert set(small.tolist()) <= set(a.tolist())  # with one seed, 2 % is inside 10 %


def test_refuses_a_fraction_that_leaves_a_class_empty():
    y = balanced_labels()
    with pytest.raises(UserError, match=r"'0\.5%'.*5 labelled images for 10 classes .*empty; use at least 1%"):
        select_labelled(y, parse_labels("0.5%"), seed=0, num_classes=10, classes=[f"c{i}" for i in range(10)])
    # a class with no train image at all is empty whatever the request
    y2 = y.clone()
    y2[y2 == 4] = 3
    with pytest.raises(UserError, match=r"'5' leaves class 'c4' without a labelled image"):
        select_labelled(y2, parse_labels("5"), seed=0, num_classes=10, classes=[f"c{i}" for i in range(10)])


def test_validation_split_is_outside_the_labelled_subset():
    y = balanced_labels()
    idx, _ = select_labelled(y, parse_labels("10%"), seed=0, num_classes=10)
    val = carve_validation(y, idx, 20, seed=0, num_classes=10)
    assert not set(val.tolist()) & set(idx.tolist())
    assert torch.bincount(y[val], minlength=10).tolist() == [20] * 10
    assert carve_validation(y, idx, 0, 0, 10).numel() == 0


def test_id_file_for_in_memory_and_image_folder(tmp_path):
    from PIL import Image

    ds = build_dataset("digits", "train")
    f = tmp_path / "ids.txt"
    want = [int(torch.nonzero(ds.labels == c)[0]) for c in range(10)]
    f.write_text("# one image per class\n" + "\n".join(map(str, want)) + "\n\n")
    idx, info = select_labelled(ds.labels, parse_labels(str(f)), num_classes=10, dataset=ds)
    assert idx.tolist() == sorted(want) and info["kind"] == "file"
    f.write_text("\n".join(map(str, want[:9])) + "\n")  # class 9 missing
    with pytest.raises(UserError, match="without a labelled image"):
        select_labelled(ds.labels, parse_labels(str(f)), num_classes=10, dataset=ds)
    # ImageNet-style list: file names as in the official 1percent.txt, or class/name
    root = tmp_path / "imgs" / "train"
    for wnid in ("n01440764", "n01443537"):
        (root / wnid).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / wnid / f"{wnid}_{i}.JPEG")
    folder = build_dataset(str(tmp_path / "imgs"), "train")
    f.write_text("n01440764_2.JPEG\nn01443537/n01443537_0.JPEG\n")
    idx, _ = select_labelled(folder.labels, parse_labels(str(f)), num_classes=2, dataset=folder)
    assert sorted(folder.files[i].name for i in idx) == ["n01440764_2.JPEG", "n01443537_0.JPEG"]
    f.write_text("n01440764_2.JPEG\nn09999999_1.JPEG\n")
    with pytest.raises(UserError, match=r"1 of 2 ids match no image .*'n09999999_1.JPEG'"):
        select_labelled(folder.labels, parse_labels(str(f)), num_classes=2, dataset=folder)


# ------------------------------------------------------------------ fine-tuning
def test_finetuning_moves_backbone_and_head_but_not_the_source():
    from probes.features import extract_features

    from transfer.data.datasets import TensorImageDataset

    full = build_dataset("digits", "train")
    ds = TensorImageDataset("digits200", full.images[:200], full.labels[:200], full.classes, full.mean, full.std)
    bb = random_backbone("small_resnet18", 0.125, seed=0)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    feats_before, _ = extract_features(bb, ds, 8, ds.mean, ds.std)
    idx, _ = select_labelled(ds.labels, parse_labels("3"), num_classes=10)
    cfg = FinetuneConfig(epochs=5, batch_size=10, lr=0.1, max_steps=4)
    model, head, rec = finetune_backbone(bb, ds, idx, 8, ds.mean, ds.std, cfg, 10, seed=0)
    assert rec["steps"] == 4 and rec["steps_per_epoch"] == 3 and rec["batch_size"] == 10
    # the source backbone is untouched: parameters and BatchNorm statistics, hence frozen features
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())
    feats_after, _ = extract_features(bb, ds, 8, ds.mean, ds.std)
    assert torch.equal(feats_before, feats_after)
    # the copy moved: convolutions, BN statistics, and the head away from its seeded init
    tuned = model.state_dict()
    assert not torch.equal(tuned["conv1.weight"], before["conv1.weight"])
    assert not torch.equal(tuned["layer4.1.conv2.weight"], before["layer4.1.conv2.weight"])
    assert not torch.equal(tuned["bn1.running_mean"], before["bn1.running_mean"])
    init = new_head(bb.feature_dim, 10, seed=0)
    assert not torch.equal(head.weight.detach(), init.weight) and not torch.equal(head.bias.detach(), init.bias)
    # and reproducibly so
    model2, head2, _ = finetune_backbone(bb, ds, idx, 8, ds.mean, ds.std, cfg, 10, seed=0)
    assert torch.equal(model2.state_dict()["conv1.weight"], tuned["conv1.weight"])
    assert torch.equal(head2.weight, head.weight)


def test_frozen_probe_paths_do_not_include_finetune():
    from probes.run import PROBES, RUNNERS

    assert PROBES == ("knn", "linear", "fewshot") and set(RUNNERS) == set(PROBES)


def test_bad_config_values_are_named():
    for kw, needle in (({"epochs": 0}, "--ft-epochs"), ({"batch_size": 1}, "--ft-batch-size"),
                       ({"lr": -1.0}, "--ft-lr"), ({"crop_scale_min": 0.0}, "--crop-scale-min"),
                       ({"baselines": ("linear",)}, "'linear'")):
        with pytest.raises(UserError, match=needle):
            FinetuneConfig(**kw).check()


# ------------------------------------------------------------------ end to end
FAST = ["--ft-max-steps", "3", "--ft-batch-size", "16", "--l2-steps", "4", "--batch-size", "512"]


def test_probe_finetune_end_to_end_writes_report(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["probe", "finetune", "--ckpt", "random:small_resnet18:0.125", "--data", "digits", "--labels", "10%",
               "--val-per-class", "5", "--out", str(out)] + FAST)
    assert rc == 0
    for ext in ("json", "md", "html"):
        assert (out / f"finetune_10pct.{ext}").stat().st_size > 300
    rep = json.loads((out / "finetune_10pct.json").read_text())
    ft = rep["probes"]["finetune"]
    assert set(ft["runs"]) == {"random", "pixels"}  # the source is random init: no second random run
    assert ft["labels"]["n_labelled"] == 144 and ft["n_val"] == 50
    assert ft["runs"]["random"]["steps"] == 3 and 0 <= ft["runs"]["random"]["top1"] <= 100
    assert ft["runs"]["random"]["val_top1"] is not None and ft["runs"]["pixels"]["n_test"] == 360
    assert ft["runs"]["pixels"]["val_top1"] is not None and ft["runs"]["pixels"]["l2_val_top1"] is not None
    assert ft["runs"]["pixels"]["top1"] > 70  # logistic regression on 144 digit images
    assert rep["summary"]["finetune_n_labelled"] == 144
    md = (out / "finetune_10pct.md").read_text()
    assert "## Semi-supervised fine-tuning" in md and "| random |" in md and "| pixels |" in md
    assert "finetune_pixels_top1" in capsys.readouterr().out


def test_probe_finetune_export_gets_a_random_init_twin(tmp_path):
    from transfer.checkpoint import export_backbone

    bb = random_backbone("small_resnet18", 0.125, seed=11)
    try:
        export_backbone(tmp_path / "backbone.safetensors", bb, {"method": "test", "input_size": 8})
    except RuntimeError as e:
        pytest.skip(f"export_backbone unavailable: {e}")
    assert main(["probe", "finetune", "--ckpt", str(tmp_path), "--data", "digits", "--labels", "2",
                 "--baselines", "random", "--out", str(tmp_path / "o")] + FAST) == 0
    ft = json.loads((tmp_path / "o" / "finetune_2perclass.json").read_text())["probes"]["finetune"]
    assert set(ft["runs"]) == {"pretrained", "random"}
    assert ft["runs"]["random"]["source"]["spec"] == "random:small_resnet18:0.125:0"
    assert ft["runs"]["pretrained"]["source"]["method"] == "test"
    assert ft["labels"]["per_class"] == [2] * 10


@pytest.mark.parametrize("labels,needle", [("0%", "'0%'"), ("0.5%", "empty"), ("garbage", "'garbage'"),
                                           ("101%", "at most 100%")])
def test_probe_finetune_bad_labels_one_line_error(tmp_path, capsys, labels, needle):
    assert main(["probe", "finetune", "--ckpt", "pixels", "--data", "digits", "--labels", labels,
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())
