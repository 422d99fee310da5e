"""``transfer run TASK --ckpt PATH [--engine auto|NAME] [--data PATH] [key=value ...]`` and
``transfer run --list``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import parse_override
from ..errors import UserError


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
    from ..engines import ENGINES
    from ..tasks import TASKS

    rows = []
    for name in TASKS.names():
        t = TASKS.get(name)
        engines = []
        for e in t.engines:
            ok, why = ENGINES[e]() if e in ENGINES else (False, "not built")
            engines.append(f"{e}{'' if ok else ' (unavailable: ' + why + ')'}")
        where = t.locate(None)
        rows.append(f"{name:16s} {t.kind:4s} data: {'present at ' + str(where) if where else 'missing'}\n"
                    f"{'':16s} engines: {', '.join(engines)}\n{'':16s} {t.description}")
    return "\n".join(rows) if rows else "no tasks registered"


def default_out(task: str, ckpt: str) -> Path:
    """Inside the run folder when --ckpt is one (so ``transfer zoo publish`` finds the result),
    else ``runs/transfer/<task>/<ckpt name>``."""
    p = Path(ckpt)
    if p.is_dir() and (p / "backbone.safetensors").exists():
        return p / "transfer" / task
    import re

    tag = p.parent.name if p.is_file() else (p.name if p.exists() else ckpt)
    return Path("runs") / "transfer" / task / re.sub(r"[^A-Za-z0-9._-]+", "_", tag).strip("_")


def run(args: argparse.Namespace) -> int:
    from ..tasks import TASKS

    if args.list or not args.task:
        print(list_tasks())
        return 0
    task = TASKS.get(args.task)
    if not args.ckpt:
        raise UserError("--ckpt is required (a backbone export, run folder, checkpoint, zoo:NAME or random:ARCH)")
    overrides = {}
    for o in args.overrides:
        overrides.update(parse_override(o))
    settings = task.resolve_settings(overrides, args.max_iter)
    data = task.require_data(args.data)
    out = Path(args.out) if args.out else default_out(task.name, str(args.ckpt))
    assert task.runner is not None, f"task {task.name} has no runner"
    res = task.runner(task=task, ckpt=args.ckpt, engine=args.engine, data=data, out_dir=out, settings=settings,
                      eval_only=args.eval_only, device=args.device)
    print(json.dumps(res, indent=1))
    return 0
