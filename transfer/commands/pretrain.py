"""``transfer pretrain CONFIG [key=value ...]``: pretrain, checkpoint, export.

Works under ``torchrun --nproc_per_node N -m transfer pretrain ...`` (DDP; gloo on CPU)."""
from __future__ import annotations

import argparse
import json

from ..config import load_config, recipe_groups
from ..trainer import Trainer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain a backbone from a YAML recipe",
                       description="Pretrain a backbone. CONFIG is a YAML path or a built-in recipe name "
                                   "(see --list). Overrides: dotted keys, e.g. optim.epochs=2 method.form=grad.")
    p.add_argument("config", nargs="?", help="recipe name or YAML path")
    p.add_argument("overrides", nargs="*", help="key=value overrides (YAML values)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--list", action="store_true", help="list the built-in recipes, grouped, one line each")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list or not args.config:
        for i, (title, entries) in enumerate(recipe_groups()):
            print(("\n" if i else "") + f"{title}:")
            width = max(len(n) for n, _ in entries)
            for name, desc in entries:
                print(f"  {name:<{width}}  {desc}")
        return 0
    cfg = load_config(args.config, args.overrides)

    tr = Trainer(cfg, device=args.device)
    try:
        out = tr.fit()
    finally:
        tr.close()
    if tr.rank == 0:
        print(json.dumps(out))
    return 0
