"""``transfer bench {trainer,probes}``: speed as ratios measured inside one process.

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
import statistics
import time
from typing import Any, Dict, List

import torch


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
    register_methods(s)


def _timeit(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def bench_trainer(arch: str, width: float, size: int, batch: int, method: str, form: str, momentum: bool,
                  data: str, reps: int, device: str = "auto") -> Dict[str, Any]:
    from ..config import load_config
    from ..data import build_dataset
    from ..trainer import Trainer

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


def run_probes(args: argparse.Namespace) -> int:
    from probes.bench import bench_probes, format_bench

    print(format_bench(bench_probes(n_train=args.n_train, n_test=args.n_test, dim=args.dim)))
    return 0


# ------------------------------------------------------------------------------ bench methods
def register_methods(s: argparse._SubParsersAction) -> None:
    """``transfer bench methods``: the fair comparison (issue 8); the work is in :mod:`transfer.study`."""
    from ..study.cells import BUDGETS

    me = s.add_parser(
        "methods", help="every method x (original loss, grad, grad + EMA) x seed under one setting: "
                        "probes, detection, segmentation -> table, plot, docs/benchmarks.md",
        description="Pretrain every registered method under identical settings in its original loss, its gradient "
                    "form without and with the momentum encoder, for several seeds; probe each (k-NN, linear, "
                    "few-shot); fine-tune each method's default form on a detection and a segmentation task; write "
                    "OUT/table.md, OUT/table.json, OUT/plot.svg (and --doc). Finished cells are reused.")
    me.add_argument("--data", required=True, help="dataset name (fashion_mnist, digits, synthetic) or folder")
    me.add_argument("--budget", choices=sorted(BUDGETS), default="small",
                    help="preset for steps, batch, seeds, probe and transfer sizes: " +
                         "; ".join(f"{k}: {b.steps} steps x {b.batch}, {b.note}" for k, b in BUDGETS.items()))
    me.add_argument("--steps", type=int, help="pretraining steps per cell (overrides the budget)")
    me.add_argument("--batch", type=int, help="batch size (overrides the budget)")
    me.add_argument("--methods", help="comma-separated method names (default: every registered method)")
    me.add_argument("--forms", help="variants: loss (original), grad, grad+ema; comma-separated (default: all three)")
    me.add_argument("--seeds", type=int, help="seeds per (method, variant) (default: the budget's)")
    me.add_argument("--out", help="study folder (default: runs/study/<data>_<budget>)")
    me.add_argument("--jobs", type=int, default=1, help="cells in parallel processes (default 1)")
    me.add_argument("--threads", type=int, help="torch threads per job (default: cores // jobs)")
    me.add_argument("--device", default="cpu", help="cpu | cuda | auto (several GPUs: one per job)")
    me.add_argument("--size", type=int, help="input size (default: the recipe's / the images' native size)")
    me.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override applied to every cell alike (repeatable)")
    me.add_argument("--probe-train", type=int, help="train images for the probes, a fixed subset (0 = all)")
    me.add_argument("--probe-test", type=int, help="test images for the probes (0 = all)")
    me.add_argument("--l2-steps", type=int, help="linear probe L2 sweep length")
    me.add_argument("--episodes", type=int, help="few-shot episodes")
    me.add_argument("--det-task", default="trees_det", help="detection task for the default forms (default trees_det)")
    me.add_argument("--seg-task", default="nuclei_seg", help="segmentation task (default nuclei_seg)")
    me.add_argument("--transfer-iters", type=int, help="fine-tuning iterations per transfer task")
    me.add_argument("--transfer-seeds", type=int, help="transfer only the first K seeds (default: the budget's)")
    me.add_argument("--transfer-tasks", choices=["both", "det", "seg", "none"], default="both",
                    help="which transfer tasks run (default both)")
    me.add_argument("--no-transfer", action="store_true", help="same as --transfer-tasks none")
    me.add_argument("--no-baselines", action="store_true", help="skip the random-init and raw-pixel reference rows")
    me.add_argument("--retry-failed", action="store_true", help="rerun cells and tasks recorded as failed")
    me.add_argument("--doc", help="also write this Markdown page (docs/benchmarks.md) and its SVG beside it")
    me.add_argument("--dry-run", action="store_true", help="list the cells and estimate the time; run nothing")
    me.add_argument("--img-per-s", type=float, default=None,
                    help="training image pairs/s of the machine, for --dry-run (default 400: 2 cores)")
    me.set_defaults(func=run_methods)


def _methods_command(args: argparse.Namespace) -> str:
    """The command line that regenerates this study (explicit options only, in a fixed order)."""
    parts = ["transfer", "bench", "methods", "--data", args.data, "--budget", args.budget]
    for opt in ("steps", "batch", "methods", "forms", "seeds", "out", "threads", "size", "probe_train", "probe_test",
                "l2_steps", "episodes", "transfer_iters", "transfer_seeds"):
        v = getattr(args, opt)
        if v is not None:
            parts += [f"--{opt.replace('_', '-')}", str(v)]
    if args.jobs != 1:
        parts += ["--jobs", str(args.jobs)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if args.det_task != "trees_det":
        parts += ["--det-task", args.det_task]
    if args.seg_task != "nuclei_seg":
        parts += ["--seg-task", args.seg_task]
    if args.no_transfer or args.transfer_tasks == "none":
        parts += ["--no-transfer"]
    elif args.transfer_tasks != "both":
        parts += ["--transfer-tasks", args.transfer_tasks]
    if args.no_baselines:
        parts += ["--no-baselines"]
    for o in args.overrides:
        parts += ["--set", o]
    if args.doc:
        parts += ["--doc", args.doc]
    import shlex

    return " ".join(shlex.quote(p) for p in parts)


def methods_spec(args: argparse.Namespace):
    from ..errors import UserError
    from ..study.cells import BUDGETS, StudySpec, parse_methods, parse_variants

    b = BUDGETS[args.budget]
    pick = lambda v, d: d if v is None else v  # noqa: E731
    steps, batch, seeds = pick(args.steps, b.steps), pick(args.batch, b.batch), pick(args.seeds, b.seeds)
    for name, v in (("--steps", steps), ("--batch", batch), ("--seeds", seeds), ("--jobs", args.jobs)):
        if v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    tasks = "none" if args.no_transfer else args.transfer_tasks
    return StudySpec(
        data=args.data, out=args.out or f"runs/study/{args.data}_{args.budget}", methods=parse_methods(args.methods),
        variants=parse_variants(args.forms), seeds=seeds, steps=steps, batch=batch, budget=args.budget,
        size=args.size, jobs=args.jobs, threads=args.threads, device=args.device,
        probe_train=pick(args.probe_train, b.probe_train), probe_test=pick(args.probe_test, b.probe_test),
        l2_steps=pick(args.l2_steps, b.l2_steps), episodes=pick(args.episodes, b.episodes),
        det_task=args.det_task if tasks in ("both", "det") and args.det_task not in ("", "none") else None,
        seg_task=args.seg_task if tasks in ("both", "seg") and args.seg_task not in ("", "none") else None,
        transfer_iters=pick(args.transfer_iters, b.transfer_iters),
        transfer_seeds=pick(args.transfer_seeds, b.transfer_seeds), baselines=not args.no_baselines,
        overrides=list(args.overrides), retry_failed=args.retry_failed, command=_methods_command(args))


def run_methods(args: argparse.Namespace) -> int:
    spec = methods_spec(args)
    if args.dry_run:
        from ..study.cells import RATES, estimate, fmt_seconds, plan_cells
        from ..study.runner import dataset_facts

        facts = dataset_facts(spec.data)
        cells = plan_cells(spec.methods, spec.variants, spec.seeds)
        rates = {"train_img_s": args.img_per_s} if args.img_per_s else None
        e = estimate(spec, cells, facts["n_train"], facts["n_test"], rates, size=spec.size or
                     (28 if spec.data == "fashion_mnist" else facts["size"]))
        for c in cells:
            print(f"  {c.cell_id:40s} form={c.form:4s} ema={'yes' if c.momentum else 'no ':3s}"
                  f"{'  + ' + ', '.join(t for _, t in spec.transfer_tasks) if c.is_default and c.seed < spec.transfer_seeds and spec.transfer_tasks else ''}")
        print(f"{e['cells']} cells, {e['probe_runs']} probe runs, {e['transfer_runs']} transfer runs; "
              f"{e['images_per_cell']:,} images per cell")
        print(f"estimate for 2 free cores ({(args.img_per_s or RATES['train_img_s']):.0f} pairs/s): pretraining "
              f"{fmt_seconds(e['train_s'])}, probes {fmt_seconds(e['probes_s'])}, transfer {fmt_seconds(e['transfer_s'])}; "
              f"total {fmt_seconds(e['total_s'])}")
        return 0
    from ..study.runner import run_study

    run_study(spec, doc=args.doc)
    return 0
