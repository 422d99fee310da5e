"""The ``transfer`` command line. Each stage registers its subcommands from its own module.

A module in ``COMMAND_MODULES`` exposes ``register(subparsers)``; each subparser sets
``func(args) -> int``. A :class:`~transfer.errors.UserError`, or an ``OSError`` (read-only folder, full
disk), becomes one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .errors import UserError

COMMAND_MODULES = [
    "transfer.commands.pretrain",
    "transfer.commands.demo",
    "transfer.commands.bench",
    "transfer.commands.run",
    "model_zoo.cli",
    "converters.cli",
    "probes.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow options (`transfer run TASK --ckpt X lr=0.1`)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"transfer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"transfer {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # read-only output folder, full disk, permission denied: one line naming the path
        what = e.strerror or type(e).__name__
        path = f": {e.filename}" if e.filename else ""
        print(f"transfer {args.command}: error: {what}{path}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
