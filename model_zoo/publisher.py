"""``publish``: a run folder -> one verified model folder in a zoo, plus its index entry.

Steps: validate the name; read the export (its weights hash is checked); refuse an existing name
without ``force``; run the caller's ``before`` step (the CLI's ``--probe``); stage every file in
``ZOO/.staging/NAME.XXXX`` (backbone, detectron2 and mmseg conversions, config, results, card,
SHA256SUMS); then, under the index lock, re-check the name, rename the staged folder into place
(``ZOO/NAME``, or a fresh ``ZOO/NAME~TOKEN`` when a listed model is replaced with ``force``) and
rewrite the index atomically. Until that last rename of ``index.json`` the new model does not
exist for any reader and the old one is untouched, so a publish killed at any point leaves the
listed model readable and at most an unlisted folder, which the next publish of that name clears.
Each staging folder is owned through an ``flock`` on ``.staging/NAME.XXXX.lock``; every publish
first removes the staging folders whose owner is gone (killed publishes, replaced models).
Only regular files inside the run folder are copied: a symlinked ``config.yaml`` or export is
refused. ``checkpoint.pt`` (full training state) is never published.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from transfer.checkpoint import atomic_write_text, read_export
from transfer.errors import UserError

from converters import read_checkpoint
from converters.writers import get_writer

from . import card as card_mod
from .names import check_name
from .results import gather
from .store import CARD, SUMS, LocalZoo, Zoo, folder_name, open_zoo, remove_tree, sha256_file, sums_text

BACKBONE = "backbone.safetensors"
RESULTS = "results.json"
CONVERSIONS = {"detectron2": "detectron2.pkl", "mmseg": "mmseg.pth"}


def _convert(stage: Path, name: str) -> Dict[str, Any]:
    """Write the detectron2 / mmseg files next to the backbone; per target the files, or why not."""
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


def _run_file(run_dir: Path, fname: str) -> Optional[Path]:
    """``run_dir/fname`` if it is a regular file inside the run folder; None if absent. A symlink,
    or anything resolving outside the folder, is refused: publish copies it world-readable."""
    p = run_dir / fname
    if not os.path.lexists(p):
        return None
    if p.is_symlink():
        raise UserError(f"{p} is a symbolic link (to {os.readlink(p)}); publish copies only regular files "
                        f"inside the run folder: replace it with a copy")
    if not p.resolve().is_relative_to(run_dir.resolve()):
        raise UserError(f"{p} resolves outside the run folder ({p.resolve()}); refused")
    if not stat.S_ISREG(p.lstat().st_mode):
        raise UserError(f"{p} is not a regular file; refused")
    return p


def _copy_nofollow(src: Path, dst: Path) -> None:
    """Copy a regular file, refusing a symlink swapped in after the check (O_NOFOLLOW)."""
    try:
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise UserError(f"{src}: cannot read it as a regular file ({e.strerror}); refused") from None
    with os.fdopen(fd, "rb") as f, open(dst, "wb") as out:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UserError(f"{src} is not a regular file; refused")
        shutil.copyfileobj(f, out)


def _new_stage(staging: Path, name: str) -> Tuple[Path, int]:
    """A fresh staging folder ``NAME.XXXX`` and the descriptor holding ``flock`` on ``NAME.XXXX.lock``
    (which exists before the folder and goes after it: a folder without a held lock has no owner)."""
    staging.mkdir(parents=True, exist_ok=True)
    while True:
        fd, lock = tempfile.mkstemp(prefix=f"{name}.", suffix=".lock", dir=staging)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            mine = os.stat(lock).st_ino == os.fstat(fd).st_ino  # not removed by a sweep before our flock
        except FileNotFoundError:
            mine = False
        if mine:
            stage = Path(lock[: -len(".lock")])
            try:
                stage.mkdir()
                return stage, fd
            except FileExistsError:  # an ownerless leftover of that name: leave it to the sweep
                os.unlink(lock)
        os.close(fd)


def _release_stage(stage: Path, fd: int) -> None:
    remove_tree(stage)
    try:
        os.unlink(f"{stage}.lock")
    except FileNotFoundError:
        pass
    os.close(fd)


def sweep_staging(staging: Path) -> None:
    """Remove staging folders whose publish is gone: a lock file nobody holds, or no lock file at all
    (replaced model folders, leftovers of a publish killed mid-way)."""
    if not staging.is_dir():
        return
    for p in sorted(staging.iterdir()):
        if p.is_dir() and not p.is_symlink():
            if not os.path.lexists(f"{p}.lock"):
                remove_tree(p)
            continue
        if p.suffix != ".lock":
            continue
        try:
            fd = os.open(p, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a publish in progress
            os.close(fd)
            continue
        try:
            remove_tree(p.with_suffix(""))
            os.unlink(p)
        except OSError:
            pass
        finally:
            os.close(fd)


def _discard(path: Path, staging: Path) -> Path:
    """Move a folder out of the zoo into ``.staging`` (one rename; removed by us or a later sweep)."""
    junk = staging / f"{path.name}.{secrets.token_hex(4)}.old"
    os.replace(path, junk)
    return junk


def publish(run_dir: Path, name: str, zoo: Optional[Zoo | str] = None, force: bool = False,
            before: Optional[Callable[[Path, Dict[str, Any]], None]] = None, license: str = "mit",
            log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Publish ``run_dir`` as ``name``; returns the index entry. See the module docstring.

    ``before(run_dir, meta)`` runs once the run folder and the name have been checked and before
    the results are gathered: ``transfer zoo publish --probe`` runs the probes there (the zoo
    itself does not import the probes, issue 16)."""
    check_name(name)
    zoo = zoo if isinstance(zoo, Zoo) else open_zoo(zoo)
    if not isinstance(zoo, LocalZoo):
        raise UserError(f"zoo at {zoo.location} is read-only (HTTP); publish to a directory")
    run_dir = Path(run_dir).expanduser()
    src = (_run_file(run_dir, BACKBONE) if run_dir.is_dir() else run_dir) or run_dir / BACKBONE
    if not src.is_file():
        raise UserError(f"{run_dir}: no {BACKBONE} (expected a run folder made by `transfer pretrain`)")
    if run_dir.is_file():
        run_dir = run_dir.parent
    config = _run_file(run_dir, "config.yaml")
    _sd, meta = read_export(src)  # checks the weights against their sha256
    if not isinstance(meta.get("arch"), dict):
        raise UserError(f"{src}: no 'arch' in the metadata; not a transfer export")
    if name in zoo.read_index()["models"] and not force:
        raise UserError(f"zoo model {name!r} already exists in {zoo.location}; pass --force to replace it")
    if before is not None:
        before(run_dir, meta)
    doc, rows, warnings = gather(run_dir, meta.get("weights_sha256"))

    staging = zoo.root / ".staging"
    sweep_staging(staging)
    stage, stage_fd = _new_stage(staging, name)
    try:
        _copy_nofollow(src, stage / BACKBONE)
        conversions = _convert(stage, name)
        if config is not None:
            _copy_nofollow(config, stage / "config.yaml")
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
        junk = []
        with zoo.lock():
            index = zoo.read_index()
            listed = index["models"].get(name)
            if listed is not None and not force:
                raise UserError(f"zoo model {name!r} was published meanwhile in {zoo.location}; pass --force to replace it")
            current = zoo.root / folder_name(name, listed) if listed is not None else None
            plain = zoo.folder(name)
            # folders of this name no entry points at: a publish killed before its index write
            for d in sorted(zoo.root.glob(f"{name}~*")) + [plain]:
                if d != current and os.path.lexists(d):
                    junk.append(_discard(d, staging))
            # the listed folder stays untouched until the index points at the new one
            final = plain if not os.path.lexists(plain) else zoo.root / f"{name}~{secrets.token_hex(6)}"
            if final != plain:
                entry["folder"] = final.name
            os.replace(stage, final)
            index["models"][name] = entry
            try:
                zoo.write_index(index)
            except BaseException:  # the index still describes the old folder, which was never moved
                os.replace(final, stage)
                raise
            if current is not None and current != final:
                junk.append(_discard(current, staging))
        for d in junk:
            remove_tree(d)
        log(f"published {name} -> {final}")
        return entry
    finally:
        _release_stage(stage, stage_fd)
