"""Integrity: tampered files refused (local and HTTP), names validated, no overwrite without --force,
a failed publish never listed, concurrent publishes both listed with a valid index."""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest
import torch

import model_zoo
from model_zoo.names import check_name
from model_zoo.store import LocalZoo
from transfer.cli import main
from transfer.errors import UserError

from .conftest import make_run, weights_sha

BAD_NAMES = ["../x", "/etc/x", "x/../../y", "a/b", "..", ".", ".hidden", "", "UPPER", "x" * 65, "x\n", "-x", "x.",
             "a..b", "c:\\x", "%2e%2e"]


def _flip_byte(p: Path, at: int = -100) -> None:
    b = bytearray(p.read_bytes())
    b[at] ^= 0xFF
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_refused(name):
    with pytest.raises(UserError, match="invalid zoo model name"):
        check_name(name)


def test_bad_names_refused_everywhere(tiny_zoo, tmp_path, capsys):
    zoo, run = tiny_zoo
    for name in ("../x", "/etc/x"):
        assert main(["zoo", "publish", str(run), "--name", name, "--zoo", str(zoo)]) == 2
        assert "invalid zoo model name" in capsys.readouterr().err
        for cmd in (["show", name], ["get", name, "-o", str(tmp_path / "o")]):
            assert main(["zoo"] + cmd + ["--zoo", str(zoo)]) == 2
            assert "invalid zoo model name" in capsys.readouterr().err
        with pytest.raises(UserError, match="invalid zoo model name"):
            model_zoo.load(name, zoo=str(zoo))
    assert main(["probe", "knn", "--ckpt", "zoo:../tiny", "--data", "digits", "--out", str(tmp_path)]) == 2
    assert "invalid zoo model name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (zoo.parent / "x").exists()
    assert set(json.loads((zoo / "index.json").read_text())["models"]) == {"tiny"}


def test_tampered_file_refused_locally(tiny_zoo, tmp_path, capsys):
    zoo, _ = tiny_zoo
    assert model_zoo.get("tiny", zoo=str(zoo)) == zoo / "tiny"  # intact: verified in place
    _flip_byte(zoo / "tiny" / "detectron2.pkl")
    assert main(["zoo", "get", "tiny", "--zoo", str(zoo)]) == 2
    err = capsys.readouterr().err
    assert "detectron2.pkl" in err and "sha256" in err and "\n" == err[-1] and err.count("\n") == 1
    out = tmp_path / "copy"
    assert main(["zoo", "get", "tiny", "--zoo", str(zoo), "-o", str(out)]) == 2
    assert not (out / "detectron2.pkl").exists()  # the bad file never lands
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(".")]  # nor any temp file
    with pytest.raises(UserError, match="sha256"):
        model_zoo.load("tiny", zoo=str(zoo))
    # a tampered card is refused by show
    _flip_byte(zoo / "tiny" / "README.md", at=10)
    assert main(["zoo", "show", "tiny", "--zoo", str(zoo)]) == 2
    assert "README.md" in capsys.readouterr().err


def test_tampered_file_refused_over_http(tiny_zoo, http_zoo, tmp_path, capsys):
    zoo, _ = tiny_zoo
    url = http_zoo(zoo)
    assert main(["zoo", "get", "tiny", "--zoo", url, "-o", str(tmp_path / "ok")]) == 0
    capsys.readouterr()
    # same size, one byte changed: the weights
    _flip_byte(zoo / "tiny" / "backbone.safetensors")
    out = tmp_path / "bad"
    assert main(["zoo", "get", "tiny", "--zoo", url, "-o", str(out)]) == 2
    assert "backbone.safetensors" in capsys.readouterr().err
    assert not (out / "backbone.safetensors").exists()
    _flip_byte(zoo / "tiny" / "backbone.safetensors")  # restore it
    # a longer file than the index lists: refused without reading past the listed size
    with open(zoo / "tiny" / "results.json", "a") as f:
        f.write(" " * 10)
    with pytest.raises(UserError, match="larger than"):
        model_zoo.get("tiny", out=tmp_path / "bad2", zoo=url)
    # an index that points outside the model folder is refused before anything is fetched
    index = json.loads((zoo / "index.json").read_text())
    index["models"]["tiny"]["files"]["../../evil"] = {"sha256": "0" * 64, "size": 1}
    (zoo / "index.json").write_text(json.dumps(index))
    assert main(["zoo", "list", "--zoo", url]) == 2
    assert "invalid file name '../../evil'" in capsys.readouterr().err


def test_overwrite_needs_force(tiny_zoo, tmp_path, capsys):
    zoo, run = tiny_zoo
    assert main(["zoo", "publish", str(run), "--name", "tiny", "--zoo", str(zoo)]) == 2
    assert "already exists" in capsys.readouterr().err
    run2 = make_run(tmp_path / "run2", "resnet18", width=0.125, seed=5)
    assert main(["zoo", "publish", str(run2), "--name", "tiny", "--zoo", str(zoo), "--force"]) == 0
    index = json.loads((zoo / "index.json").read_text())
    assert list(index["models"]) == ["tiny"] and index["models"]["tiny"]["weights_sha256"] == weights_sha(run2)
    assert model_zoo.get("tiny", zoo=str(zoo))  # the replaced folder verifies
    assert not list((zoo / ".staging").iterdir())  # no staging or replaced folders left behind


def test_failed_publish_never_listed(tiny_zoo, tmp_path, monkeypatch):
    zoo, _ = tiny_zoo
    before = (zoo / "index.json").read_bytes()
    run = make_run(tmp_path / "run3", "resnet18", width=0.125, seed=3)
    import model_zoo.publisher as pub

    def boom(*a, **k):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(pub, "_convert", boom)  # fails while staging
    with pytest.raises(RuntimeError):
        model_zoo.publish(run, "partial", zoo=str(zoo))
    monkeypatch.undo()
    monkeypatch.setattr(LocalZoo, "write_index", boom)  # fails at the very last step, after the rename
    with pytest.raises(RuntimeError):
        model_zoo.publish(run, "partial", zoo=str(zoo))
    with pytest.raises(RuntimeError):  # a forced replacement that fails keeps the old model intact
        model_zoo.publish(run, "tiny", zoo=str(zoo), force=True)
    monkeypatch.undo()
    assert (zoo / "index.json").read_bytes() == before
    assert not (zoo / "partial").exists() and not list((zoo / ".staging").iterdir())
    assert model_zoo.get("tiny", zoo=str(zoo)) == zoo / "tiny"
    with pytest.raises(UserError, match="no model 'partial'"):
        model_zoo.get("partial", zoo=str(zoo))


def _worker(zoo: str, pairs) -> None:
    torch.set_num_threads(1)  # libgomp's pool is not fork-safe once the parent ran a parallel region
    for run, name in pairs:
        model_zoo.publish(run, name, zoo=zoo)


def test_concurrent_publishes(tmp_path):
    """Two processes publish while the test holds the index lock: both stage completely, neither is
    listed until the lock is released; then all their models are listed in one valid index."""
    zoo = tmp_path / "zoo"
    runs = [make_run(tmp_path / f"run{i}", "resnet18", width=0.125, seed=i) for i in range(4)]
    ctx = multiprocessing.get_context("fork")  # children share the imports: no second torch start-up
    procs = []
    with LocalZoo(zoo).lock():
        for p in range(2):
            pairs = [(str(runs[2 * p]), f"p{p}-a"), (str(runs[2 * p + 1]), f"p{p}-b")]
            procs.append(ctx.Process(target=_worker, args=(str(zoo), pairs)))
            procs[-1].start()
        deadline = time.time() + 120
        while len(list((zoo / ".staging").glob("*/SHA256SUMS"))) < 2:  # both fully staged, waiting on the lock
            assert time.time() < deadline and all(p.is_alive() for p in procs), [p.exitcode for p in procs]
            time.sleep(0.05)
        assert not (zoo / "index.json").exists()  # staged, but not published: invisible
        assert model_zoo.list_models(zoo=str(zoo)) == {}
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    index = json.loads((zoo / "index.json").read_text())  # valid JSON
    assert set(index["models"]) == {"p0-a", "p0-b", "p1-a", "p1-b"}
    for name in index["models"]:
        assert model_zoo.get(name, zoo=str(zoo)) == zoo / name
    assert not list((zoo / ".staging").iterdir())


def test_width_multiplier_needs_load_backbone(tiny_zoo):
    zoo, run = tiny_zoo
    with pytest.raises(UserError, match="load_backbone"):
        model_zoo.load("tiny", zoo=str(zoo))
    bb, meta = model_zoo.load_backbone("tiny", zoo=str(zoo))
    assert meta["arch"]["width"] == 0.125 and meta["weights_sha256"] == weights_sha(run)
