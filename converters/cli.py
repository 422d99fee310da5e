"""``transfer convert``: ``CKPT --to {detectron2,mmseg,timm,torchvision} -o OUT`` or ``CKPT --inspect``."""
from __future__ import annotations

import argparse

from model_zoo import resolve
from transfer.errors import UserError

from .convert import convert
from .formats import LAYOUTS
from .readers import describe
from .writers import WRITERS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an SSL ResNet checkpoint to detectron2 / mmseg / timm / torchvision, or inspect it",
        description="Read any recognised SSL checkpoint (formats: "
        + ", ".join(layout.name for layout in LAYOUTS)
        + ") and write it for another codebase, reporting every rename and every dropped key.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint file, run folder, or zoo:NAME")
    p.add_argument("--to", choices=WRITERS.names(), help="target format")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (config fragment written next to it)")
    p.add_argument("--from", dest="source", default="auto", choices=["auto"] + [lay.name for lay in LAYOUTS],
                   help="source format (default: detect from the keys)")
    p.add_argument("--strict", action="store_true", help="fail if any key is left unconverted")
    branch = p.add_mutually_exclusive_group()
    branch.add_argument("--momentum", dest="momentum", action="store_const", const=True, default=None,
                        help="take the momentum / teacher / EMA encoder")
    branch.add_argument("--online", dest="momentum", action="store_const", const=False,
                        help="take the online / student encoder (default: what the method's own evaluation "
                        "uses - the teacher for DINO, the online encoder elsewhere; the report says which)")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="convert weights holding NaN/inf (named in the report) instead of refusing them")
    p.add_argument("--inspect", action="store_true", help="print the detected format and what the file holds")
    p.add_argument("-q", "--quiet", action="store_true", help="summarise renames instead of listing each")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if str(args.checkpoint).startswith("zoo:"):  # model zoo (issue 7): the verified published backbone
        args.checkpoint = str(resolve(args.checkpoint))
    if args.inspect:
        print(describe(args.checkpoint, source=args.source))
        return 0
    if not args.to or not args.output:
        raise UserError("convert needs --to FORMAT and -o OUT (or --inspect)")
    report = convert(args.checkpoint, args.to, args.output, source=args.source,
                     momentum=args.momentum, strict=args.strict, allow_nonfinite=args.allow_nonfinite)
    print(report.format(verbose=not args.quiet))
    return 0
