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
