"""Where a zoo lives and how its files are read, written and verified.

A zoo is a local directory (or a mounted share) or a read-only HTTP(S) base URL, laid out as::

    ZOO/index.json                 {"format": "transfer.zoo/1", "models": {NAME: entry, ...}}
    ZOO/NAME/README.md             model card (YAML front matter, results table)
    ZOO/NAME/backbone.safetensors  torchvision key names, metadata in the header
    ZOO/NAME/detectron2.pkl, detectron2.yaml, mmseg.pth, mmseg_mm_config.py   (not for small stems)
    ZOO/NAME/results.json          every result gathered at publish time
    ZOO/NAME/config.yaml           the pretraining config (when the run has one)
    ZOO/NAME/SHA256SUMS            ``sha256sum -c`` format, every other file of the folder

A ``--force`` replacement puts the new files in a fresh folder ``ZOO/NAME~TOKEN`` (the entry's
``folder`` says which; absent means ``NAME``) and switches the index to it in one atomic rename,
so a reader sees either the old model or the new one, whole, whenever a publish is killed.

Each index entry lists every file of its folder with its sha256 and size; ``get`` checks each file
against it (local or HTTP). The index is the only thing readers trust to say what is published:
a folder without an entry (a crashed publish) is invisible. It is rewritten atomically (temp file
+ rename), under an ``fcntl`` lock on ``ZOO/.lock`` held by the writer.

Location: ``--zoo PATH_OR_URL``, else ``$TRANSFER_ZOO``, else ``$TRANSFER_CACHE/zoo``, else
``~/.cache/transfer/zoo``. Files fetched from an HTTP zoo go to ``<cache>/zoo-downloads/``.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional

from transfer.checkpoint import atomic_write
from transfer.errors import UserError
from transfer.suggest import did_you_mean

from .names import check_file_name, check_folder, check_name

INDEX = "index.json"
INDEX_FORMAT = "transfer.zoo/1"
SUMS = "SHA256SUMS"
CARD = "README.md"
HTTP_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def cache_root() -> Path:
    return Path(os.environ.get("TRANSFER_CACHE") or Path.home() / ".cache" / "transfer").expanduser()


def default_location() -> str:
    """``$TRANSFER_ZOO``, else ``$TRANSFER_CACHE/zoo`` / ``~/.cache/transfer/zoo``."""
    return os.environ.get("TRANSFER_ZOO") or str(cache_root() / "zoo")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sums_text(files: Dict[str, Dict[str, Any]]) -> str:
    """``sha256sum`` format (two spaces, binary-safe names), sorted by name."""
    return "".join(f"{files[n]['sha256']}  {n}\n" for n in sorted(files))


def parse_sums(text: str, where: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for ln in text.splitlines():
        if not ln.strip():
            continue
        digest, _, name = ln.partition("  ")
        if not _HEX64.fullmatch(digest):
            raise UserError(f"{where}: malformed line {ln[:80]!r}")
        out[check_file_name(name.lstrip("*"), where)] = digest
    return out


def validate_index(data: Any, where: str) -> Dict[str, Any]:
    """Check an index (possibly from an untrusted server): shape, names, hashes, sizes."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise UserError(f"{where}: not a zoo index (expected an object with 'models')")
    if data.get("format") != INDEX_FORMAT:
        raise UserError(f"{where}: unsupported index format {data.get('format')!r} (expected {INDEX_FORMAT!r})")
    for name, entry in data["models"].items():
        check_name(name)
        if isinstance(entry, dict) and "folder" in entry:
            check_folder(name, entry["folder"], where)
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict) or not files:
            raise UserError(f"{where}: model {name!r} lists no files")
        for fname, rec in files.items():
            check_file_name(fname, f"{where} (model {name!r})")
            if (not isinstance(rec, dict) or not _HEX64.fullmatch(str(rec.get("sha256", "")))
                    or not isinstance(rec.get("size"), int) or rec["size"] < 0):
                raise UserError(f"{where}: model {name!r} file {fname!r} has no valid sha256/size")
    return data


def empty_index() -> Dict[str, Any]:
    return {"format": INDEX_FORMAT, "models": {}}


def folder_name(name: str, entry: Optional[Dict[str, Any]]) -> str:
    """The folder holding ``name``'s files: ``NAME``, or ``NAME~TOKEN`` after a forced replacement."""
    return check_folder(name, (entry or {}).get("folder", name))


class Zoo:
    """Read access common to both kinds of zoo."""

    location: str
    read_only: bool = True

    def __str__(self) -> str:
        return self.location

    def read_index(self) -> Dict[str, Any]:
        raise NotImplementedError

    @contextlib.contextmanager
    def open_file(self, name: str, fname: str, folder: Optional[str] = None) -> Iterator[IO[bytes]]:
        """Open ``fname`` of model ``name`` (in ``folder``, default ``name``)."""
        raise NotImplementedError
        yield  # pragma: no cover

    def entry(self, name: str) -> Dict[str, Any]:
        check_name(name)
        models = self.read_index()["models"]
        if name not in models:
            raise UserError(f"no model {name!r} in the zoo at {self.location}{did_you_mean(name, models)}"
                            + ("" if models else " (the zoo is empty)"))
        return models[name]

    def fetch_to(self, name: str, fname: str, rec: Dict[str, Any], dest: Path, folder: Optional[str] = None) -> None:
        """Copy one file to ``dest`` through a temp file, refusing it unless size and sha256 match."""
        check_file_name(fname)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            h, n = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, self.open_file(name, fname, folder) as src:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    n += len(chunk)
                    if n > rec["size"]:
                        raise UserError(f"{self.location}: {name}/{fname} is larger than the {rec['size']} bytes "
                                        "the index lists (tampered or replaced?); refused")
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if n != rec["size"] or h.hexdigest() != rec["sha256"]:
                raise UserError(f"{self.location}: {name}/{fname} fails its sha256 check (got {h.hexdigest()[:16]}..., "
                                f"index says {rec['sha256'][:16]}...; tampered or corrupt); refused")
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class LocalZoo(Zoo):
    read_only = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def read_index(self) -> Dict[str, Any]:
        p = self.index_path
        if not p.is_file():
            return empty_index()
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{p}: unreadable zoo index ({e})") from None
        return validate_index(data, str(p))

    def write_index(self, data: Dict[str, Any]) -> None:
        """Atomic replace; call only while holding :meth:`lock`."""
        validate_index(data, "index to write")
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)  # a shared zoo is read by others (mkstemp makes 0600)

        atomic_write(self.index_path, write)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive ``fcntl.flock`` on ``ZOO/.lock`` (blocks until the other writer is done)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def open_file(self, name: str, fname: str, folder: Optional[str] = None) -> Iterator[IO[bytes]]:
        p = self.root / check_folder(name, folder or name) / check_file_name(fname)
        try:
            f = open(p, "rb")
        except OSError as e:
            raise UserError(f"zoo model {name!r}: cannot read {p} ({e.strerror})") from None
        with f:
            yield f

    def verify_in_place(self, name: str, entry: Dict[str, Any]) -> Path:
        """Hash every listed file where it lies; the model folder, or :class:`UserError`."""
        folder = self.root / folder_name(check_name(name), entry)
        for fname, rec in entry["files"].items():
            p = folder / fname
            if not p.is_file():
                raise UserError(f"zoo model {name!r}: {p} is missing")
            if p.stat().st_size != rec["size"] or sha256_file(p) != rec["sha256"]:
                raise UserError(f"zoo model {name!r}: {p} fails its sha256 check (tampered or corrupt); refused")
        return folder


class HttpZoo(Zoo):
    """A read-only zoo served over HTTP(S): ``BASE/index.json`` and ``BASE/NAME/FILE``."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.location = self.base

    def _url(self, *parts: str) -> str:
        return "/".join([self.base] + [urllib.parse.quote(p, safe="") for p in parts])

    @contextlib.contextmanager
    def _open(self, url: str) -> Iterator[IO[bytes]]:
        req = urllib.request.Request(url, headers={"User-Agent": "transfer-ssl-zoo/1"})
        try:
            resp = urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S)  # noqa: S310 (http/https only)
        except urllib.error.HTTPError as e:
            raise UserError(f"GET {url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"GET {url}: {getattr(e, 'reason', e)}") from None
        with resp:
            yield resp

    def read_index(self) -> Dict[str, Any]:
        url = self._url(INDEX)
        with self._open(url) as r:
            raw = r.read(64 << 20)
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise UserError(f"{url}: not valid JSON ({e})") from None
        return validate_index(data, url)

    @contextlib.contextmanager
    def open_file(self, name: str, fname: str, folder: Optional[str] = None) -> Iterator[IO[bytes]]:
        with self._open(self._url(check_folder(check_name(name), folder or name), check_file_name(fname))) as r:
            yield r


def open_zoo(location: Optional[str] = None) -> Zoo:
    """A zoo from a path, ``file://`` URL or ``http(s)://`` base URL (default: :func:`default_location`)."""
    loc = str(location or default_location())
    scheme = urllib.parse.urlsplit(loc).scheme.lower()
    if scheme in ("http", "https"):
        return HttpZoo(loc)
    if scheme == "file":
        return LocalZoo(Path(urllib.request.url2pathname(urllib.parse.urlsplit(loc).path)))
    if scheme and len(scheme) > 1:  # "C:" style drive letters are not schemes
        raise UserError(f"zoo location {loc!r}: unsupported scheme {scheme!r} (use a path, file://, http:// or https://)")
    return LocalZoo(Path(loc))


def download_dir(zoo: Zoo, name: str) -> Path:
    key = hashlib.sha256(zoo.location.encode()).hexdigest()[:16]
    return cache_root() / "zoo-downloads" / key / check_name(name)


def get(name: str, out: Optional[Path] = None, zoo: Optional[Zoo] = None) -> Path:
    """A local folder holding every file of ``name``, each checked against the index's sha256.

    A local zoo without ``out`` is verified in place (no copy). Otherwise files are copied or
    downloaded into ``out`` (default for HTTP: the download cache); a file already there with the
    right hash is kept. Every file is fetched and checked in a temp folder inside ``out`` first and
    moved into place only when all pass: any mismatch raises :class:`UserError` and leaves nothing
    behind (not even ``out``, when it did not exist before).
    """
    zoo = zoo or open_zoo()
    entry = zoo.entry(name)
    if out is None and isinstance(zoo, LocalZoo):
        folder = zoo.verify_in_place(name, entry)
        verify_folder(folder, entry)
        return folder
    folder = Path(out).expanduser() if out is not None else download_dir(zoo, name)
    src = folder_name(name, entry)
    todo = {f: r for f, r in entry["files"].items()
            if not ((folder / f).is_file() and (folder / f).stat().st_size == r["size"] and sha256_file(folder / f) == r["sha256"])}
    if not todo:
        verify_folder(folder, entry)
        return folder
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".zoo-get.", dir=folder))
    try:
        for fname, rec in todo.items():
            zoo.fetch_to(name, check_file_name(fname), rec, tmp / fname, folder=src)
        sums_path = tmp / SUMS if SUMS in todo else folder / SUMS
        if not sums_path.is_file():
            raise UserError(f"zoo model {name!r} lists no {SUMS}; not a zoo model folder")
        sums = parse_sums(sums_path.read_text(), f"{name}/{SUMS}")
        for fname, digest in sums.items():
            if fname not in entry["files"] or entry["files"][fname]["sha256"] != digest:
                raise UserError(f"{name}/{SUMS}: {fname} does not match the zoo index; refused")
        for fname in todo:
            os.replace(tmp / fname, folder / fname)
    except BaseException:
        remove_tree(tmp)
        for p in created:  # only the folders this call made, and only while empty
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    remove_tree(tmp)
    verify_folder(folder, entry)
    return folder


def verify_folder(folder: Path, entry: Optional[Dict[str, Any]] = None) -> List[str]:
    """Check ``folder`` against its own ``SHA256SUMS`` (and, given one, the index entry's hashes)."""
    folder = Path(folder)
    sums_path = folder / SUMS
    if not sums_path.is_file():
        raise UserError(f"{folder}: no {SUMS}; not a zoo model folder")
    sums = parse_sums(sums_path.read_text(), str(sums_path))
    for fname, digest in sums.items():
        p = folder / fname
        if entry is not None:
            rec = entry["files"].get(fname)
            if rec is None or rec["sha256"] != digest:
                raise UserError(f"{sums_path}: {fname} does not match the zoo index; refused")
            continue  # the file itself was hashed against the index just before
        if not p.is_file() or sha256_file(p) != digest:
            raise UserError(f"{p}: fails its sha256 check against {SUMS} (tampered or corrupt)")
    return sorted(sums)


def card_text(name: str, zoo: Optional[Zoo] = None) -> str:
    """The model card of ``name``, verified against the index."""
    zoo = zoo or open_zoo()
    entry = zoo.entry(name)
    rec = entry["files"].get(CARD)
    if rec is None:
        raise UserError(f"zoo model {name!r} has no {CARD}")
    with tempfile.TemporaryDirectory() as d:
        dest = Path(d) / CARD
        zoo.fetch_to(name, CARD, rec, dest, folder=folder_name(name, entry))
        return dest.read_text(encoding="utf-8")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
