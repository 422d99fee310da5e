"""``transfer bench {trainer,probes,amp,methods}``: speed as ratios measured inside one process, and
the methods study (``methods``: :mod:`transfer.study`, the fair comparison of issue 15).

``amp``: a recipe's trainer step in bf16 autocast against fp32 on the CPU, steps interleaved.

``trainer``: the trainer's full step (schedules, momentum update, rule, NaN guard, optimiser)
on pre-loaded batches, against the bare compute floor of the same model and batch -- online
forward+backward of both views plus the momentum forward, nothing else -- interleaved so both
see the same machine state; and the data pipeline's images/s (gather + two-view augmentation)
beside the images/s the step consumes. Wall-clock figures on a shared machine are noisy; the
ratio is the number to read.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from probes.bench import bench_probes, format_bench

from ..config import load_config
from ..data import build_dataset
from ..devices import bf16_native, resolve_device
from ..errors import UserError
from ..study.plan import BUDGETS, VARIANTS, cell_config, estimate, parse_methods, plan_cells
from ..study.run import StudySpec, run_study
from ..tasks import TASKS
from ..trainer import Trainer, train_precision


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: trainer overhead ratio, probes speed")
    s = p.add_subparsers(dest="what", metavar="WHAT")
    s.required = True
    t = s.add_parser("trainer", help="trainer step time / compute floor, and data pipeline images/s")
    t.add_argument("--arch", default="small_resnet18")
    t.add_argument("--width", type=float, default=1.0)
    t.add_argument("--size", type=int, default=32)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--method", default="unigrad")
    t.add_argument("--form", default="grad")
    t.add_argument("--no-momentum", action="store_true")
    t.add_argument("--data", default="synthetic", help="dataset for the pipeline measurement")
    t.add_argument("--reps", type=int, default=3, help="timed repetitions of each (after one warm-up)")
    t.add_argument("--device", default="auto")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=run_trainer)
    pr = s.add_parser("probes", help="k-NN and linear probe speed vs scikit-learn (synthetic features)")
    pr.add_argument("--n-train", type=int, default=50_000)
    pr.add_argument("--n-test", type=int, default=10_000)
    pr.add_argument("--dim", type=int, default=512)
    pr.set_defaults(func=run_probes)
    a = s.add_parser("amp", help="a recipe's trainer step in bf16 autocast vs fp32, interleaved in one process")
    a.add_argument("--recipe", default="demo_fmnist")
    a.add_argument("--reps", type=int, default=5, help="timed steps of each (after one warm-up)")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for both trainers (repeatable)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_amp)
    register_methods(s)


def _timeit(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def bench_trainer(arch: str, width: float, size: int, batch: int, method: str, form: str, momentum: bool,
                  data: str, reps: int, device: str = "auto") -> Dict[str, Any]:

    cfg = load_config(None, [f"model.arch={arch}", f"model.width={width}", f"data.size={size}",
                             f"optim.batch_size={batch}", f"method.name={method}", f"method.form={form}",
                             f"method.momentum={'true' if momentum else 'false'}", f"data.name={data}",
                             "data.workers=0", "model.proj_hidden=2048", "model.proj_dim=2048",
                             "optim.epochs=1000", "train.knn_every=0", "out_dir=/tmp/transfer-bench"])
    ds = build_dataset(data, "train")
    if len(ds) < batch:  # a bench needs one batch of images, not a full dataset
        reps_needed = (batch + len(ds) - 1) // len(ds)
        ds.images, ds.labels = ds.images.repeat(reps_needed, 1, 1, 1), ds.labels.repeat(reps_needed)
    tr = Trainer(cfg, device=device, quiet=True)
    tr.train_set = ds
    dev = tr.device
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    x = ds.images[:batch]
    x1, x2 = tr._views(0, x)
    online, mom = tr.online, tr.model.momentum

    def floor() -> None:
        with torch.autocast(dev.type, dtype=tr.amp_dtype, enabled=tr.amp):
            z1, z2, p1, p2 = online(x1, x2)
            if mom is not None:
                with torch.no_grad():
                    mom(x1), mom(x2)
        out = z1.float().sum() + z2.float().sum()
        if p1 is not None:
            out = out + p1.float().sum() + p2.float().sum()
        out.backward()
        for p in online.parameters():
            p.grad = None

    def step() -> None:
        tr.train_step(x1, x2)

    def pipeline() -> None:
        idx = torch.randint(0, len(ds), (batch,))
        tr._views(1, ds.images[idx])

    floor(), step(), pipeline()  # warm-up
    f_t: List[float] = []
    s_t: List[float] = []
    p_t: List[float] = []
    for _ in range(reps):
        f_t.append(_timeit(floor, sync))
        s_t.append(_timeit(step, sync))
        p_t.append(_timeit(pipeline, sync))
    f, s, p = statistics.median(f_t), statistics.median(s_t), statistics.median(p_t)
    return {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(), "arch": arch, "width": width, "size": size, "batch": batch,
        "method": f"{method}/{form}{'+ema' if momentum else ''}", "amp": tr.amp, "channels_last": tr.channels_last,
        "floor_s": round(f, 4), "step_s": round(s, 4), "ratio": round(s / f, 4),
        "step_img_s": round(batch / s, 1), "pipeline_img_s": round(batch / p, 1), "reps": reps,
        "floor_all": [round(v, 4) for v in f_t], "step_all": [round(v, 4) for v in s_t],
    }


def run_trainer(args: argparse.Namespace) -> int:
    r = bench_trainer(args.arch, args.width, args.size, args.batch, args.method, args.form, not args.no_momentum,
                      args.data, args.reps, args.device)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"transfer bench trainer: {r['arch']} x{r['width']} at {r['size']} px, batch {r['batch']}, "
          f"{r['method']}, {r['device']} ({r['threads']} threads), median of {r['reps']}")
    print(f"  compute floor (fwd+bwd both views + momentum fwd): {r['floor_s']:.3f} s/step")
    print(f"  trainer step (+ schedules, EMA, rule, guard, optimiser): {r['step_s']:.3f} s/step")
    print(f"  ratio step / floor: {r['ratio']:.3f}   (target <= 1.10)")
    print(f"  data pipeline: {r['pipeline_img_s']:.0f} img/s; the step consumes {r['step_img_s']:.0f} img/s "
          f"({r['pipeline_img_s'] / r['step_img_s']:.1f}x headroom)")
    return 0


def bench_amp(recipe: Optional[str], reps: int, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The recipe's full trainer step (CPU, its batch, real images from its dataset) with
    ``train.amp=true`` against ``train.amp=false``: two trainers, the same views, steps interleaved
    so both see the same machine state; the median ratio is the number to read."""

    trs = {amp: Trainer(load_config(recipe, [*overrides, f"train.amp={amp}", "train.knn_every=0",
                                             "out_dir=/tmp/transfer-bench", f"name=amp_{amp}"]), device="cpu", quiet=True)
           for amp in ("false", "true")}
    assert trs["true"].amp and not trs["false"].amp, "a float64 recipe cannot autocast"
    tr = trs["false"]
    batch = tr.global_batch
    x1, x2 = tr._views(0, tr.train_set.images[:batch])
    times: Dict[str, List[float]] = {k: [] for k in trs}
    for t in trs.values():  # warm-up
        t.train_step(x1, x2)
    for _ in range(reps):
        for k, t in trs.items():
            times[k].append(_timeit(lambda: t.train_step(x1, x2), lambda: None))
    fp32, bf16 = statistics.median(times["false"]), statistics.median(times["true"])
    return {"recipe": recipe, "batch": batch, "threads": torch.get_num_threads(),
            "bf16_native": bf16_native(torch.device("cpu")),
            "fp32_s": round(fp32, 4), "bf16_s": round(bf16, 4), "speedup": round(fp32 / bf16, 3), "reps": reps,
            "fp32_all": [round(v, 4) for v in times["false"]], "bf16_all": [round(v, 4) for v in times["true"]]}


def run_amp(args: argparse.Namespace) -> int:
    if args.reps < 1:
        raise UserError(f"--reps must be positive, got {args.reps}")
    r = bench_amp(args.recipe, args.reps, args.overrides)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"transfer bench amp: recipe {r['recipe']}, batch {r['batch']}, CPU ({r['threads']} threads), "
          f"median of {r['reps']} interleaved steps; native bf16 (AMX): {'yes' if r['bf16_native'] else 'no'}")
    print(f"  fp32 step {r['fp32_s']:.3f} s, bf16 autocast step {r['bf16_s']:.3f} s: speed-up {r['speedup']:.2f}x "
          f"(train.amp auto picks bf16 only where native)")
    return 0


def run_probes(args: argparse.Namespace) -> int:
    print(format_bench(bench_probes(n_train=args.n_train, n_test=args.n_test, dim=args.dim)))
    return 0


# ------------------------------------------------------------------------------ bench methods
def register_methods(s: argparse._SubParsersAction) -> None:
    """``transfer bench methods``: the fair comparison (issue 15); the work is in :mod:`transfer.study`."""

    me = s.add_parser(
        "methods", help="each gradient rule (with / without EMA), each original loss, DirectPred vs trained "
                        "predictors x seeds: probes, fmnist_det, fmnist_seg -> table, intervals, docs/benchmarks.md",
        description="Pretrain every cell under one setting, probe it (k-NN, linear), fine-tune each method's default "
                    "form on the transfer tasks; write OUT/table.json and OUT/benchmarks.md (and --doc). Finished "
                    "phases are reused; after --max-minutes the run stops between phases (rerun to resume).")
    me.add_argument("--budget", choices=sorted(BUDGETS), default="fmnist",
                    help="; ".join(f"{k}: {b.note}" for k, b in BUDGETS.items()))
    me.add_argument("--epochs", type=float, help="pretraining epochs per cell (default: the budget's)")
    me.add_argument("--seeds", type=int, help="seeds (default: the budget's)")
    me.add_argument("--methods", help="comma-separated method names (default: every registered method)")
    me.add_argument("--variants", help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all)")
    me.add_argument("--tasks", default="fmnist_det,fmnist_seg", help="transfer tasks, comma-separated; 'none' for none")
    me.add_argument("--transfer-iters", type=int, help="fine-tuning iterations (default: the budget's)")
    me.add_argument("--out", help="study folder (default: runs/study/<budget>)")
    me.add_argument("--device", default="cpu", help="cpu | cuda")
    me.add_argument("--max-minutes", type=float, default=150.0, help="start no phase after this (default 150)")
    me.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override applied to every cell alike (repeatable)")
    me.add_argument("--retry-failed", action="store_true", help="rerun phases recorded as failed")
    me.add_argument("--doc", help="also write this page (docs/benchmarks.md), keeping its human-written reading")
    me.add_argument("--dry-run", action="store_true", help="list the cells and estimate the time; run nothing")
    me.set_defaults(func=run_methods)


def _methods_command(args: argparse.Namespace) -> str:
    """The command line that regenerates this study (explicit options only)."""

    parts = ["transfer", "bench", "methods", "--budget", args.budget]
    for opt in ("epochs", "seeds", "methods", "variants", "transfer_iters", "out"):
        if getattr(args, opt) is not None:
            parts += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.tasks != "fmnist_det,fmnist_seg":
        parts += ["--tasks", args.tasks]
    if args.device != "cpu":
        parts += ["--device", args.device]
    for o in args.overrides:
        parts += ["--set", o]
    if args.doc:
        parts += ["--doc", args.doc]
    return " ".join(shlex.quote(p) for p in parts)


def methods_spec(args: argparse.Namespace):
    b = BUDGETS[args.budget]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    if variants == []:
        raise UserError(f"--variants {args.variants!r}: no variant given; choose from {', '.join(VARIANTS)}")
    bad = [v for v in variants or [] if v not in VARIANTS]
    if bad:
        raise UserError(f"--variants: unknown {bad[0]!r}; choose from {', '.join(VARIANTS)}")
    tasks = [] if args.tasks in ("", "none") else [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        TASKS.get(t)  # a clear error for an unknown task
    spec = StudySpec(out=args.out or f"runs/study/{args.budget}", methods=parse_methods(args.methods), recipe=b.recipe,
                     epochs=b.epochs if args.epochs is None else args.epochs,
                     seeds=b.seeds if args.seeds is None else args.seeds,
                     transfer_iters=b.transfer_iters if args.transfer_iters is None else args.transfer_iters,
                     tasks=tasks, variants=variants, overrides=list(b.overrides) + list(args.overrides),
                     device=args.device, max_minutes=args.max_minutes, retry_failed=args.retry_failed,
                     budget=args.budget, command=_methods_command(args), tuned=b.tuned)
    for name, v in (("--epochs", spec.epochs), ("--seeds", spec.seeds), ("--transfer-iters", spec.transfer_iters)):
        if v <= 0:
            raise UserError(f"{name} must be positive, got {v}")
    return spec


def run_methods(args: argparse.Namespace) -> int:
    spec = methods_spec(args)
    if args.dry_run:
        cells = plan_cells(spec.methods, spec.seeds, spec.variants, spec.tuned)
        cfg = cell_config(spec.recipe, spec.epochs, spec.overrides, spec.out, cells[0])
        n_train = len(build_dataset(cfg["data"]["name"], "train", cfg["data"]["root"]))
        n_tr = (sum(c.transfer for c in cells) + spec.seeds) * len(spec.tasks)
        for c in cells:
            print(f"  {c.cell_id:36s} {c.name:28s} form={c.form:4s} ema={'yes' if c.momentum else 'no '}"
                  f"{'  + ' + ', '.join(spec.tasks) if c.transfer and spec.tasks else ''}"
                  f"{'  ' + ' '.join(f'{k}={v}' for k, v in c.tuned) if c.tuned else ''}")
        prec = train_precision(cfg, resolve_device(spec.device))
        e = estimate(cells, spec.epochs, n_train, n_tr, spec.transfer_iters, bf16=prec == "bf16-autocast")
        print(f"{e['cells']} cells ({e['per_cell_s'] / 60:.1f} min each: pretraining + probes), {n_tr} transfer runs; "
              f"estimate on 2 cores: pretraining {e['train_s'] / 3600:.1f} h, probes {e['probes_s'] / 3600:.1f} h, "
              f"transfer {e['transfer_s'] / 3600:.1f} h; total {e['total_s'] / 3600:.1f} h = "
              f"{e['total_s'] / 60 / args.max_minutes:.1f} invocations of {args.max_minutes:g} min; cells train in {prec}")
        return 0

    run_study(spec, doc=args.doc)
    return 0
