"""``transfer zoo {publish,list,show,get}``: the model zoo from the command line.

The zoo is ``--zoo PATH_OR_URL``, else ``$TRANSFER_ZOO``, else ``~/.cache/transfer/zoo``.
"""
from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from probes.run import ProbeConfig, run_all

from .publisher import publish
from .store import card_text, get, open_zoo


def _zoo_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zoo", default=None, metavar="PATH_OR_URL",
                   help="zoo directory or http(s) base URL (default $TRANSFER_ZOO or ~/.cache/transfer/zoo)")


def register(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="publish, list, show and get models in the model zoo",
                              description="Publish, list, show and get models in the model zoo (--zoo PATH_OR_URL, "
                                          "else $TRANSFER_ZOO, else ~/.cache/transfer/zoo).")
    sub = p.add_subparsers(dest="zoo_command", metavar="ACTION")
    sub.required = True

    sp = sub.add_parser("publish", help="publish a run folder: weights, conversions, card, results, sha256")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="run folder made by `transfer pretrain` (backbone.safetensors)")
    sp.add_argument("--name", required=True, help="model name: lowercase letters, digits, '.', '_', '-'")
    sp.add_argument("--force", action="store_true", help="replace a model of the same name")
    sp.add_argument("--probe", action="store_true", help="run k-NN, linear and few-shot probes first "
                                                         "(into RUN_DIR/probes)")
    sp.add_argument("--probe-data", default=None, help="dataset for --probe (default: the pretraining dataset)")
    sp.add_argument("--device", default="cpu", help="device for --probe")
    sp.add_argument("--license", default="mit", help="licence of the weights in the card (default mit)")
    _zoo_opt(sp)
    sp.set_defaults(func=_publish)

    sp = sub.add_parser("list", help="list the published models")
    sp.add_argument("--json", action="store_true", help="print the index entries as JSON")
    _zoo_opt(sp)
    sp.set_defaults(func=_list)

    sp = sub.add_parser("show", help="print a model's card (with its results table)")
    sp.add_argument("name", metavar="NAME")
    _zoo_opt(sp)
    sp.set_defaults(func=_show)

    sp = sub.add_parser("get", help="fetch a model's files, verifying every sha256")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("-o", "--output", default=None, metavar="DIR",
                    help="folder for the files (default: verify in place for a local zoo, "
                         "the download cache for an HTTP zoo)")
    _zoo_opt(sp)
    sp.set_defaults(func=_get)


def probe_run(run_dir: Path, meta: Dict[str, Any], data: Optional[str], device: str,
              log: Callable[[str], None]) -> None:
    """``--probe``: k-NN, linear and few-shot into ``RUN_DIR/probes`` (on ``data``, else the
    pretraining dataset), which :func:`model_zoo.results.gather` then finds."""
    data = data or str(meta.get("dataset") or "synthetic")
    cfg = ProbeConfig(device=device, episodes=200, lowshot_seeds=1, lowshot_shots=(1, 5), embedding_points=500)
    log(f"probing {run_dir} on {data} (k-NN, linear, few-shot) -> {run_dir / 'probes'}")
    rep = run_all(str(run_dir), data, run_dir / "probes", cfg)
    for k, v in rep["summary"].items():
        if isinstance(v, float):
            log(f"  {k}: {v:.2f}")


def _publish(args: argparse.Namespace) -> int:
    zoo = open_zoo(args.zoo)
    before = partial(probe_run, data=args.probe_data, device=args.device, log=print) if args.probe else None
    entry = publish(args.run_dir, args.name, zoo=zoo, force=args.force, before=before, license=args.license, log=print)
    for fname, rec in sorted(entry["files"].items()):
        print(f"  {rec['sha256']}  {fname} ({rec['size']} bytes)")
    print(f"{len(entry['results'])} results; card: transfer zoo show {args.name}"
          + (f" --zoo {zoo.location}" if args.zoo else ""))
    return 0


def _headline(entry: dict) -> str:
    res = entry.get("results") or []
    if not res:
        return "-"
    r = res[0]
    more = f" (+{len(res) - 1})" if len(res) > 1 else ""
    what = r.get("probe") or r.get("task") or r["protocol"][:24]
    return f"{what} {r['metric']} {r['value']:.2f} on {r['dataset']}{more}"


def _list(args: argparse.Namespace) -> int:
    zoo = open_zoo(args.zoo)
    models = zoo.read_index()["models"]
    if args.json:
        print(json.dumps(models, indent=1, sort_keys=True))
        return 0
    if not models:
        print(f"no models in the zoo at {zoo.location}")
        return 0
    print(f"zoo: {zoo.location}")
    header = ("name", "method", "arch", "epochs", "data", "published", "first result")
    rows = [(n, str(e.get("method")), str(e.get("arch_name")), str(e.get("epochs")), str(e.get("dataset")),
             str(e.get("published", ""))[:10], _headline(e)) for n, e in sorted(models.items())]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _show(args: argparse.Namespace) -> int:
    print(card_text(args.name, open_zoo(args.zoo)), end="")
    return 0


def _get(args: argparse.Namespace) -> int:
    zoo = open_zoo(args.zoo)
    folder = get(args.name, Path(args.output) if args.output else None, zoo)
    entry = zoo.entry(args.name)
    print(f"{args.name}: {len(entry['files'])} files, sha256 verified, in {folder.resolve()}")
    for fname in sorted(entry["files"]):
        print(f"  {(folder / fname).resolve()}")
    return 0
