"""Model-zoo tests: tiny run folders made by exporting random backbones; one thread each."""
from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def make_run(path: Path, arch: str = "resnet18", width: float = 1.0, seed: int = 0, **meta: Any) -> Path:
    """A run folder as ``transfer pretrain`` leaves it: export + config + log (+ checkpoint.pt)."""
    from transfer.backbones import build_backbone
    from transfer.checkpoint import export_backbone

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    bb = build_backbone(arch, width=width)
    m: Dict[str, Any] = {"method": "byol", "form": "gradient", "momentum": 0.99, "arch_name": arch,
                         "config": {"model": {"arch": arch, "width": width}}, "epochs": 2, "images_seen": 4096,
                         "dataset": "digits", "input_size": 8, "mean": [0.3], "std": [0.4], "knn_top1": 50.0}
    m.update(meta)
    export_backbone(path / "backbone.safetensors", bb, m)
    (path / "config.yaml").write_text(f"model:\n  arch: {arch}\n  width: {width}\n")
    (path / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (path / "checkpoint.pt").write_bytes(b"full training state: never published")
    return path


def weights_sha(run: Path) -> str:
    from transfer.checkpoint import read_export

    return read_export(run / "backbone.safetensors")[1]["weights_sha256"]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tiny_zoo(tmp_path):
    """One tiny ResNet-18 (width 1/8, conversions apply) published into a fresh zoo: (zoo, run)."""
    import model_zoo

    run = make_run(tmp_path / "run", "resnet18", width=0.125)
    zoo = tmp_path / "zoo"
    model_zoo.publish(run, "tiny", zoo=str(zoo))
    return zoo, run


@pytest.fixture
def http_zoo() -> Iterator:
    """``serve(folder) -> base URL``: a real http.server on 127.0.0.1 in a thread, per test."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield serve
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch ~/.cache: downloads and the default zoo go under the test's tmp folder."""
    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TRANSFER_ZOO", raising=False)
