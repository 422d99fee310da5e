"""Zoo reliability (issue 17, section 4 items 4, 5, 8, 10): a publish killed at any point leaves the
listed model readable, ownerless staging folders are cleared, publish copies no symlinked file,
a failed ``get -o`` leaves nothing behind, an HTTP zoo serving a pickle is one clear line."""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil

import pytest

import model_zoo
from model_zoo.store import LocalZoo
from transfer.cli import main
from transfer.errors import UserError

from .conftest import make_run, weights_sha


def _killed_publish(zoo: str, run: str, where: str) -> None:
    """Child process: publish --force and die (os._exit, no cleanup runs) at ``where``."""
    import torch

    import model_zoo.publisher as pub

    torch.set_num_threads(1)  # libgomp's pool is not fork-safe once the parent ran a parallel region

    if where == "staging":
        pub._convert = lambda *a, **k: os._exit(9)
    else:
        real = LocalZoo.write_index

        def write_index(self, data):
            if where == "after-index":
                real(self, data)
            os._exit(9)

        LocalZoo.write_index = write_index
    model_zoo.publish(run, "tiny", zoo=zoo, force=True)
    os._exit(0)


@pytest.mark.parametrize("where", ["staging", "before-index", "after-index"])
def test_force_publish_killed_anywhere_keeps_a_readable_model(tiny_zoo, tmp_path, where):
    zoo, run = tiny_zoo
    old_sha = weights_sha(run)
    run2 = make_run(tmp_path / "run2", "resnet18", width=0.125, seed=7)
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_killed_publish, args=(str(zoo), str(run2), where))
    p.start()
    p.join(timeout=300)
    assert p.exitcode == 9
    listed = model_zoo.list_models(zoo=str(zoo))["tiny"]
    assert listed["weights_sha256"] == (weights_sha(run2) if where == "after-index" else old_sha)
    folder = model_zoo.get("tiny", zoo=str(zoo))  # every listed file is there and verifies
    assert folder.is_dir()
    bb, meta = model_zoo.load_backbone("tiny", zoo=str(zoo))
    assert meta["weights_sha256"] == listed["weights_sha256"]
    # the next publish clears what the killed one left (staging folder, unlisted model folder)
    model_zoo.publish(run2, "other", zoo=str(zoo))
    model_zoo.publish(run, "tiny", zoo=str(zoo), force=True)
    assert not list((zoo / ".staging").iterdir())
    assert sorted(p.name for p in zoo.iterdir() if not p.name.startswith(".")) == \
        ["index.json", "other", model_zoo.get("tiny", zoo=str(zoo)).name]
    assert model_zoo.list_models(zoo=str(zoo))["tiny"]["weights_sha256"] == old_sha


def test_repeated_force_publishes_alternate_folders_and_serve_over_http(tiny_zoo, tmp_path, http_zoo):
    zoo, run = tiny_zoo
    run2 = make_run(tmp_path / "run2", "resnet18", width=0.125, seed=7)
    for r in (run2, run, run2):
        model_zoo.publish(r, "tiny", zoo=str(zoo), force=True)
        assert model_zoo.list_models(zoo=str(zoo))["tiny"]["weights_sha256"] == weights_sha(r)
        assert len([p for p in zoo.iterdir() if p.name.startswith("tiny")]) == 1
    url = http_zoo(zoo)
    got = model_zoo.get("tiny", out=tmp_path / "dl", zoo=url)
    assert json.loads((got / "results.json").read_text())["weights_sha256"] == weights_sha(run2)


def test_index_folder_outside_the_model_refused(tiny_zoo, capsys):
    zoo, _ = tiny_zoo
    index = json.loads((zoo / "index.json").read_text())
    index["models"]["tiny"]["folder"] = "../secrets"
    (zoo / "index.json").write_text(json.dumps(index))
    assert main(["zoo", "get", "tiny", "--zoo", str(zoo)]) == 2
    err = capsys.readouterr().err
    assert "invalid folder '../secrets'" in err and err.count("\n") == 1


def test_ownerless_staging_folders_are_cleared(tiny_zoo, tmp_path):
    zoo, run = tiny_zoo
    stale = [zoo / ".staging" / "tiny.k2j3h4", zoo / ".staging" / "tiny.x9y8.old"]
    for d in stale:
        d.mkdir(parents=True)
        (d / "backbone.safetensors").write_bytes(b"x" * 100)
    dead_lock = zoo / ".staging" / "other.abcd.lock"  # a lock file nobody holds: its publish is gone
    dead_lock.write_text("")
    (zoo / ".staging" / "other.abcd").mkdir()
    model_zoo.publish(make_run(tmp_path / "r2", "resnet18", width=0.125, seed=2), "second", zoo=str(zoo))
    assert not list((zoo / ".staging").iterdir())


def test_live_staging_folder_is_not_swept(tiny_zoo, tmp_path):
    import fcntl

    from model_zoo.publisher import sweep_staging

    zoo, _ = tiny_zoo
    lock = zoo / ".staging" / "live.abcd.lock"
    (zoo / ".staging" / "live.abcd").mkdir(parents=True)
    with open(lock, "w") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        pid = os.fork()
        if pid == 0:  # another process sweeps while this one holds the lock
            sweep_staging(zoo / ".staging")
            os._exit(0)
        os.waitpid(pid, 0)
        assert (zoo / ".staging" / "live.abcd").is_dir() and lock.exists()


@pytest.mark.parametrize("what", ["config.yaml", "backbone.safetensors"])
def test_publish_refuses_symlinked_files(tmp_path, capsys, what):
    run = make_run(tmp_path / "run", "resnet18", width=0.125)
    secret = tmp_path / "secret" / what
    secret.parent.mkdir()
    shutil.move(run / what, secret)
    (run / what).symlink_to(secret)
    zoo = tmp_path / "zoo"
    assert main(["zoo", "publish", str(run), "--name", "leak", "--zoo", str(zoo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(run / what) in err and "symbolic link" in err
    assert not (zoo / "leak").exists() and model_zoo.list_models(zoo=str(zoo)) == {}


def test_failed_get_to_output_leaves_nothing(tiny_zoo, tmp_path, capsys):
    zoo, _ = tiny_zoo
    b = bytearray((zoo / "tiny" / "detectron2.pkl").read_bytes())
    b[-100] ^= 0xFF
    (zoo / "tiny" / "detectron2.pkl").write_bytes(bytes(b))
    out = tmp_path / "new" / "copy"
    assert main(["zoo", "get", "tiny", "--zoo", str(zoo), "-o", str(out)]) == 2
    assert "detectron2.pkl" in capsys.readouterr().err
    assert not out.exists() and not out.parent.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["zoo", "get", "tiny", "--zoo", str(zoo), "-o", str(mine)]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_http_zoo_serving_a_pickle_is_one_line(tmp_path, http_zoo, capsys, monkeypatch):
    """A server whose index lists a pickle (with its true sha256) as the backbone."""
    import hashlib

    folder = tmp_path / "srv" / "evil"
    folder.mkdir(parents=True)
    payload = pickle.dumps({"conv1.weight": [1.0, 2.0]})
    (folder / "backbone.safetensors").write_bytes(payload)
    sums = f"{hashlib.sha256(payload).hexdigest()}  backbone.safetensors\n"
    (folder / "SHA256SUMS").write_text(sums)
    files = {n: {"sha256": hashlib.sha256((folder / n).read_bytes()).hexdigest(), "size": (folder / n).stat().st_size}
             for n in ("backbone.safetensors", "SHA256SUMS")}
    (tmp_path / "srv" / "index.json").write_text(json.dumps({"format": "transfer.zoo/1", "models": {"evil": {"files": files}}}))
    url = http_zoo(tmp_path / "srv")
    monkeypatch.setenv("TRANSFER_ZOO", url)
    with pytest.raises(UserError, match="safetensors"):
        model_zoo.load_backbone("evil")
    for argv in (["probe", "knn", "--ckpt", "zoo:evil", "--data", "digits", "--out", str(tmp_path / "p")],
                 ["convert", "zoo:evil", "-o", str(tmp_path / "c.pth"), "--to", "torchvision"]):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
