"""``transfer run TASK --ckpt PATH [--engine auto|NAME] [--data PATH] [key=value ...]`` and
``transfer run --list``."""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict

from ..config import parse_override
from ..engines import ENGINES
from ..errors import UserError
from ..tasks import TASKS, run_task


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="fine-tune and evaluate a backbone on a transfer task",
                       description="Run a detection or segmentation transfer task. --list shows every task.")
    p.add_argument("task", nargs="?")
    p.add_argument("overrides", nargs="*", help="task settings as key=value")
    p.add_argument("--ckpt", help="backbone: an export, a run folder, any checkpoint the converters read, "
                                  "zoo:NAME, or random:ARCH for a random-init baseline")
    p.add_argument("--engine", default="auto")
    p.add_argument("--data", help="dataset folder (default: $TRANSFER_DATA/<task data dir>)")
    p.add_argument("--out", default=None, help="output folder (default runs/transfer/<task>/<ckpt name>)")
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--list", action="store_true")
    p.set_defaults(func=run)


def list_tasks() -> str:
    rows = []
    for name in TASKS.names():
        t = TASKS.get(name)
        engines = []
        for e in t.engines:
            why = ENGINES.get(e).available()
            engines.append(e if why is None else f"{e} (unavailable: {why})")
        where = t.locate(None)
        rows.append(f"{name:16s} {t.kind:4s} data: {'present at ' + str(where) if where else 'missing'}\n"
                    f"{'':16s} engines: {', '.join(engines)}\n{'':16s} {t.description}")
    return "\n".join(rows) if rows else "no tasks registered"


#: run_task's own arguments, given as options (a ``key=value`` of the same name would clash)
OPTIONS = {"data", "out", "out_dir", "device", "engine", "eval_only", "ckpt"}
FLAG = {"out_dir": "--out"}


def run(args: argparse.Namespace) -> int:
    if args.list or not args.task:
        print(list_tasks())
        return 0
    if not args.ckpt:
        raise UserError("--ckpt is required (a backbone export, run folder, checkpoint, zoo:NAME or random:ARCH)")
    overrides: Dict[str, Any] = {}
    for o in args.overrides:
        overrides.update(parse_override(o))
    if args.max_iter is not None and "max_iter" in overrides:
        raise UserError(f"max_iter given twice (--max-iter {args.max_iter} and max_iter={overrides['max_iter']}); give one")
    max_iter = args.max_iter if args.max_iter is not None else overrides.pop("max_iter", None)
    for key in sorted(set(overrides) & OPTIONS):
        raise UserError(f"{key}={overrides[key]!r} is a command option, not a task setting: use {FLAG.get(key, '--' + key.replace('_', '-'))}")
    res = run_task(args.task, args.ckpt, data=args.data, out_dir=args.out, max_iter=max_iter,
                   device=args.device, engine=args.engine, eval_only=args.eval_only, **overrides)
    print(json.dumps(res, indent=1))
    return 0
