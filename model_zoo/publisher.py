"""``publish``: a run folder -> one verified model folder in a zoo, plus its index entry.

Steps: validate the name; read the export (its weights hash is checked); refuse an existing name
without ``force``; optionally run the probes into ``RUN_DIR/probes``; stage every file in
``ZOO/.staging/NAME.XXXX`` (backbone, detectron2 and mmseg conversions, config, results, card,
SHA256SUMS); then, under the index lock, re-check the name, rename the staged folder into place
and rewrite the index atomically. Until that last rename of ``index.json`` the model does not
exist for any reader, so an interrupted publish leaves at most an unlisted folder (cleared by the
next publish of that name). ``checkpoint.pt`` (full training state) is never published.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from transfer.checkpoint import atomic_write_text, read_export
from transfer.errors import UserError

from . import card as card_mod
from .names import check_name
from .results import gather
from .store import CARD, SUMS, LocalZoo, Zoo, open_zoo, remove_tree, sha256_file, sums_text

BACKBONE = "backbone.safetensors"
RESULTS = "results.json"
CONVERSIONS = {"detectron2": "detectron2.pkl", "mmseg": "mmseg.pth"}


def _convert(stage: Path, name: str) -> Dict[str, Any]:
    """Write the detectron2 / mmseg files next to the backbone; per target the files, or why not."""
    from converters import read_checkpoint
    from converters.writers import get_writer

    sd, meta, _report = read_checkpoint(stage / BACKBONE)
    meta["source_path"] = f"zoo:{name}/{BACKBONE}"
    done: Dict[str, Any] = {}
    for target, fname in CONVERSIONS.items():
        writer = get_writer(target)
        try:
            converted, _renames = writer.convert(sd, meta["arch"])
        except UserError as e:  # e.g. the small-image stem: the target library has no such stem
            done[target] = f"not written ({e})"
            continue
        written = writer.save(stage / fname, converted, meta)
        for p in written:  # fragments name the weights by absolute (staging) path: make it relative
            if p.suffix in (".yaml", ".py"):
                txt = p.read_text().replace(str((stage / fname).resolve()), fname)
                atomic_write_text(p, f"# weights path relative to this model folder ({name})\n" + txt)
        done[target] = sorted(p.name for p in written)
    return done


def _probe(run_dir: Path, data: str, device: str, log: Callable[[str], None]) -> None:
    from probes.run import ProbeConfig, run_all

    cfg = ProbeConfig(device=device, episodes=200, l2_steps=15, lowshot_seeds=1, lowshot_shots=(1, 5),
                      embedding_points=500)
    log(f"probing {run_dir} on {data} (k-NN, linear, few-shot) -> {run_dir / 'probes'}")
    rep = run_all(str(run_dir), data, run_dir / "probes", cfg)
    for k, v in rep["summary"].items():
        if isinstance(v, float):
            log(f"  {k}: {v:.2f}")


def publish(run_dir: Path, name: str, zoo: Optional[Zoo | str] = None, force: bool = False, probe: bool = False,
            probe_data: Optional[str] = None, device: str = "cpu", license: str = "mit",
            log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Publish ``run_dir`` as ``name``; returns the index entry. See the module docstring."""
    check_name(name)
    zoo = zoo if isinstance(zoo, Zoo) else open_zoo(zoo)
    if not isinstance(zoo, LocalZoo):
        raise UserError(f"zoo at {zoo.location} is read-only (HTTP); publish to a directory")
    run_dir = Path(run_dir).expanduser()
    src = run_dir / BACKBONE if run_dir.is_dir() else run_dir
    if not src.is_file():
        raise UserError(f"{run_dir}: no {BACKBONE} (expected a run folder made by `transfer pretrain`)")
    if run_dir.is_file():
        run_dir = run_dir.parent
    _sd, meta = read_export(src)  # checks the weights against their sha256
    if not isinstance(meta.get("arch"), dict):
        raise UserError(f"{src}: no 'arch' in the metadata; not a transfer export")
    if name in zoo.read_index()["models"] and not force:
        raise UserError(f"zoo model {name!r} already exists in {zoo.location}; pass --force to replace it")
    if probe:
        _probe(run_dir, probe_data or str(meta.get("dataset") or "synthetic"), device, log)
    doc, rows, warnings = gather(run_dir, meta.get("weights_sha256"))

    (zoo.root / ".staging").mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=zoo.root / ".staging"))
    try:
        shutil.copyfile(src, stage / BACKBONE)
        conversions = _convert(stage, name)
        if (run_dir / "config.yaml").is_file():
            shutil.copyfile(run_dir / "config.yaml", stage / "config.yaml")
        published = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        doc = {"model": name, "weights_sha256": meta.get("weights_sha256"), "published": published,
               "run_dir": str(run_dir.resolve()), "conversions": conversions, "rows": rows, "warnings": warnings,
               **doc}
        atomic_write_text(stage / RESULTS, json.dumps(doc, indent=1, sort_keys=False) + "\n")
        for p in stage.iterdir():
            os.chmod(p, 0o644)  # readable by everyone who reads the zoo (temp files are 0600)
        files = {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
                 for p in sorted(stage.iterdir()) if p.is_file() and not p.name.startswith(".")}
        text = card_mod.render(name, meta, rows, files, conversions, license, warnings)
        atomic_write_text(stage / CARD, text)
        os.chmod(stage / CARD, 0o644)
        files[CARD] = {"sha256": sha256_file(stage / CARD), "size": (stage / CARD).stat().st_size}
        atomic_write_text(stage / SUMS, sums_text(files))
        os.chmod(stage / SUMS, 0o644)
        files[SUMS] = {"sha256": sha256_file(stage / SUMS), "size": (stage / SUMS).stat().st_size}
        os.chmod(stage, 0o755)
        entry = {
            "name": name, "published": published, "method": meta.get("method"), "form": meta.get("form"),
            "arch_name": meta.get("arch_name"), "arch": meta.get("arch"), "epochs": meta.get("epochs"),
            "dataset": meta.get("dataset"), "input_size": meta.get("input_size"), "license": license,
            "weights_sha256": meta.get("weights_sha256"), "files": files,
            "conversions": {k: (v if isinstance(v, list) else None) for k, v in conversions.items()},
            "results": [{k: r[k] for k in ("protocol", "dataset", "split", "metric", "value", "kind", "probe", "task")
                         if k in r} for r in rows],
        }
        with zoo.lock():
            index = zoo.read_index()
            if name in index["models"] and not force:
                raise UserError(f"zoo model {name!r} was published meanwhile in {zoo.location}; pass --force to replace it")
            final = zoo.folder(name)
            old = None
            if final.exists():  # the replaced model (force), or an unlisted leftover of a crashed publish
                old = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=zoo.root / ".staging")) / "old"
                os.replace(final, old)
            os.replace(stage, final)
            index["models"][name] = entry
            try:
                zoo.write_index(index)
            except BaseException:  # put everything back: the index still describes the old folder
                os.replace(final, stage)
                if old is not None:
                    os.replace(old, final)
                    remove_tree(old.parent)
                raise
        if old is not None:
            remove_tree(old.parent)
        log(f"published {name} -> {final}")
        return entry
    finally:
        if stage.exists():
            remove_tree(stage)
