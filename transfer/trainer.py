"""The pretraining loop: one flat, explicit loop in the style of facebookresearch/dino
``main_dino.py``, with UniGrad's step order (``project/pretrainer.py``: lr and momentum from
per-iteration schedules, momentum update, forward, rule, backward, step).

Resume is exact: the checkpoint holds model (online and momentum), rule state (``F``, queues),
optimizer, scaler, RNG states and the step; data order and augmentations are pure functions of
(seed, step), so a run killed at any step and resumed ends bit-identical to an uninterrupted one
(CPU, ``train.deterministic``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from dataclasses import fields
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
import yaml
from safetensors import safe_open

from . import dist as tdist
from .backbones import arch_name, build_backbone
from .checkpoint import atomic_write_text, export_backbone, load_state, save_state, weights_sha256
from .data import AugmentConfig, StepBatches, TwoViewAugment, build_dataset, iterate_batches
from .devices import bf16_native, resolve_device
from .errors import UserError
from .knn_monitor import knn_eval, knn_eval_val
from .config import DEFAULTS
from .methods import METHODS, Views, build_method
from .model import Siamese
from .nn.sync_bn import convert_sync_bn
from .optim import build_optimizer, lr_schedule, momentum_schedule, param_groups
from .progress import Progress
from .runconfig import RunConfig


class NonFiniteLoss(RuntimeError):
    """A non-finite loss or state at ``step`` (raised inside the loop, turned into :class:`TrainingDiverged`)."""

    def __init__(self, msg: str, step: int) -> None:
        super().__init__(msg)
        self.step = step


class TrainingDiverged(UserError):
    """The run stopped on a non-finite loss or state; ``step`` is where. A result of the setting (the
    learning rate too hot for the loss's scale), not a fault of the tool: the study records it as such."""

    def __init__(self, msg: str, step: int) -> None:
        super().__init__(msg)
        self.step = step


def nonfinite_tensors(state: Any, prefix: str = "") -> list:
    """Names of the floating-point tensors in a (nested) state holding NaN or inf."""
    bad = []
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            bad.append(prefix or "<tensor>")
    elif isinstance(state, dict):
        for k, v in state.items():
            bad += nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            bad += nonfinite_tensors(v, f"{prefix}[{i}]")
    return bad


def setup_distributed(device: Optional[str] = None) -> torch.device:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: nccl on GPU, gloo on CPU."""
    use_cuda = resolve_device(device).type == "cuda"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not tdist.is_dist():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


# settings a resumed run may change (train.* is never compared): they do not change what a step computes
RESUME_MAY_CHANGE = ("optim.max_steps", "data.workers", "data.root")
IDENTITY_SECTIONS = ("seed", "method", "model", "data", "optim", "ema")


def train_precision(cfg: Dict[str, Any], device: torch.device) -> str:
    """What a run of ``cfg`` trains in on ``device``: ``bf16-autocast`` (``train.amp``: true, or auto
    where :func:`~transfer.devices.bf16_native`), else its ``train.dtype`` (float32 / float64;
    autocast applies to float32 runs only)."""
    t = cfg["train"]
    dtype = "float64" if t.get("dtype") == "float64" else "float32"
    amp = t.get("amp", "auto")
    on = amp is True or (amp == "auto" and bf16_native(device))
    return "bf16-autocast" if on and dtype == "float32" else dtype


def run_identity(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """What makes two configs "the same run": the flat ``section.key`` values that decide what step
    ``s`` computes (seed, method, model, data, optim, ema), without :data:`RESUME_MAY_CHANGE` and
    without the method parameters the run's form never reads (``Method.unread_params``).
    :func:`identity_mismatch` compares two; the method study stores it to reuse finished cells."""
    def flat(d: Dict[str, Any], pre: str = "") -> Dict[str, Any]:
        return {k: v for sec, sub in d.items() for k, v in
                (flat(sub, f"{pre}{sec}.").items() if isinstance(sub, dict) else [(f"{pre}{sec}", sub)])}
    m = cfg.get("method") or {}
    unread = {f"method.params.{p}" for p in METHODS.get(m["name"]).unread_params(m.get("form"))} \
        if m.get("name") in METHODS.names() else set()
    return {k: v for k, v in flat(cfg).items()
            if k.split(".")[0] in IDENTITY_SECTIONS and k not in RESUME_MAY_CHANGE and k not in unread}


_NO_DEFAULT = object()


def _default(key: str, now: Dict[str, Any]) -> Any:
    """The default of a flat identity key: a method parameter's class default, an augmentation
    field's, or :data:`~transfer.config.DEFAULTS`' (``_NO_DEFAULT`` when none is known)."""
    parts = key.split(".")
    if parts[:2] == ["method", "params"] and now.get("method.name") in METHODS.names():
        return METHODS.get(now["method.name"]).defaults.get(parts[2], _NO_DEFAULT)
    if parts[:2] == ["data", "aug"]:
        return next((f.default for f in fields(AugmentConfig) if f.name == parts[2]), _NO_DEFAULT)
    d: Any = DEFAULTS
    for p in parts:
        if not isinstance(d, dict) or p not in d:
            return _NO_DEFAULT
        d = d[p]
    return d


def identity_mismatch(stored: Dict[str, Any], now: Dict[str, Any]) -> Optional[Tuple[str, str, Any]]:
    """``(key, what was stored, value now)`` for the first key on which a stored run differs from
    ``now``, else ``None``. Keys both know must be equal; a key the stored run predates (a setting
    added to the code since) stood at its default then, so it matches only when it still does.
    The trainer's resume check and the method study's reuse of finished cells both ask this."""
    for k, v in sorted(now.items()):
        if k in stored:
            if stored[k] != v:
                return k, repr(stored[k]), v
        else:
            d = _default(k, now)
            if d is _NO_DEFAULT or d != v:
                return k, "absent" + ("" if d is _NO_DEFAULT else f" (default {d!r})"), v
    return None


# atomic_write's temp files (``.<name>.<random>.tmp``) of the files a run folder holds
RUN_FILES = ("checkpoint.pt", "backbone.safetensors", "config.yaml", "log.jsonl")


def due(step: int, every: Optional[int]) -> bool:
    """Whether a periodic action (log, checkpoint, k-NN monitor) is due at ``step``: every
    ``every``-th step counting from 0; never when ``every`` is 0 or None (the action is off)."""
    return bool(every) and step % every == 0


class Trainer:
    def __init__(self, cfg: Dict[str, Any], device: Optional[str] = None, quiet: bool = False) -> None:
        self.cfg = cfg  # the plain dict: what the checkpoint, config.yaml and the export record
        self.c = c = RunConfig.from_dict(cfg)  # the same values, validated and typed once
        self.device = setup_distributed(device)
        self.rank, self.world = tdist.rank(), tdist.world()
        self.quiet = quiet or self.rank != 0
        t = c.train
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(c.seed)

        d, m, o = c.data, c.model, c.optim
        self.train_set = build_dataset(d.name, "train", d.root, d.load_size)
        self.size = d.size
        self.aug = TwoViewAugment(AugmentConfig(size=self.size, **d.aug), self.train_set.mean, self.train_set.std)

        mc = c.method
        self.method = build_method(mc.name, m.proj_dim, mc.form, mc.momentum, **(mc.params or {}))
        backbone = build_backbone(m.arch, m.width, m.zero_init_residual)
        predictor = self.method.build_predictor(m.proj_dim, m.pred_hidden)
        self.model = Siamese(backbone, m.proj_hidden, m.proj_dim, m.proj_layers, predictor, self.method.momentum)
        if m.sync_bn and self.world > 1:
            self.model = convert_sync_bn(self.model, self.device)
        self.dtype = torch.float64 if t.dtype == "float64" else torch.float32
        self.model.to(self.device, self.dtype)
        self.method.to(self.device, self.dtype)
        self.precision = train_precision(self.cfg, self.device)
        self.amp = self.precision == "bf16-autocast"
        self.channels_last = (t.channels_last == "auto" and self.device.type == "cuda") or t.channels_last is True
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.online = self.model.online
        if self.world > 1:
            self.online = torch.nn.parallel.DistributedDataParallel(
                self.model.online, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        self.global_batch = o.batch_size
        self.sampler_args = (len(self.train_set), self.global_batch, c.seed, self.rank, self.world)
        self.steps_per_epoch = len(self.train_set) // self.global_batch
        if self.steps_per_epoch == 0:
            raise UserError(f"data.name {d.name!r} has {len(self.train_set)} images, fewer than optim.batch_size {self.global_batch}")
        self.total_steps = round(o.epochs * self.steps_per_epoch)
        self.stop_step = min(self.total_steps, o.max_steps) if o.max_steps else self.total_steps
        peak = o.base_lr * self.global_batch / 256
        self.lr = lr_schedule(peak, self.total_steps, round(o.warmup_epochs * self.steps_per_epoch), o.min_lr_ratio)
        self.mm = momentum_schedule(c.ema.base, c.ema.end, self.total_steps)
        if o.name == "sgd":  # UniGrad / MoCo: weight decay on every parameter
            groups = [{"params": [p for p in self.model.online.parameters() if p.requires_grad],
                       "weight_decay": o.weight_decay}]
        else:
            groups = param_groups(self.model.online, o.weight_decay)
        self.optimizer = build_optimizer(o.name, groups, peak, o.momentum, o.lars_eta)
        self.amp_dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)  # bf16 needs no scaling
        self.step = 0
        self.run_dir = Path(c.out_dir) / str(c.name)
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        self.log_path = self.run_dir / "log.jsonl"
        self.tb = None
        self.last_knn: Optional[float] = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": "transfer.checkpoint/1",
            "step": self.step,
            "model": self.model.state_dict(),
            "method_state": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "config": json.dumps(self.cfg),
            "world_size": self.world,
        }

    def load_state_dict(self, state: Dict[str, Any], path: Path) -> None:
        try:
            saved = json.loads(state.get("config", "{}"))
        except json.JSONDecodeError:
            saved = {}
        # everything that changes what step s computes must match; train.* and optim.max_steps may change
        # a checkpoint without its config (written elsewhere) is not checked key by key
        bad = identity_mismatch(run_identity(saved), run_identity(self.cfg)) if isinstance(saved, dict) and saved else None
        if bad is not None:
            k, was, v = bad
            raise UserError(f"{path} was trained with {k}={was}, the config now says {v!r}; "
                            f"use another run name (name=...)")
        try:
            self.model.load_state_dict(state["model"])
            self.method.load_state_dict(state["method_state"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"{path} does not fit this model: {str(e).splitlines()[0][:200]}") from None
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])

    def save(self) -> None:
        """Write the checkpoint, only if every float tensor of the state is finite (a loss can stay
        finite while, e.g., a BatchNorm running_var overflows): the last good checkpoint is kept."""
        state = self.state_dict() if self.rank == 0 else None
        bad = nonfinite_tensors({k: state[k] for k in ("model", "method_state", "optimizer")}) if state else []
        if tdist.any_rank(bool(bad), self.device):
            where = f" in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}" if bad else " on another rank"
            raise NonFiniteLoss(f"non-finite values{where} at step {self.step}", self.step)
        if self.rank == 0:
            save_state(self.ckpt_path, state)

    def export(self) -> Path:
        path = self.run_dir / "backbone.safetensors"
        if self.rank == 0:
            export_backbone(path, self.model.online.backbone, {
                "method": self.method.name, "form": self.method.form, "momentum": self.method.momentum,
                "arch_name": arch_name(self.model.online.backbone.spec), "config": self.cfg,
                "steps": self.step, "images_seen": self.step * self.global_batch,
                "epochs": round(self.step / self.steps_per_epoch, 4), "dataset": self.c.data.name,
                "input_size": self.size, "mean": list(self.train_set.mean), "std": list(self.train_set.std),
                "knn_top1": self.last_knn, "knn_split": self.c.train.knn_split, "precision": self.precision,
            })
        return path

    def export_is_current(self) -> bool:
        """Whether ``backbone.safetensors`` holds this step's online backbone (same step, same weights)."""
        path = self.run_dir / "backbone.safetensors"
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception:
            return False
        sd = {k: v.detach().cpu().contiguous() for k, v in self.model.online.backbone.state_dict().items()}
        return meta.get("steps") == json.dumps(self.step) and meta.get("weights_sha256") == weights_sha256(sd)

    def _last_logged_knn(self) -> Optional[float]:
        """The k-NN monitor logged at this step, for an export redone after a restart."""
        if not self.log_path.exists():
            return None
        knn = None
        for ln in self.log_path.read_text().splitlines():
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("step") == self.step and "knn_top1" in rec:
                knn = rec["knn_top1"]
        return knn

    def remove_stale_temps(self) -> None:
        """Temp files left by a kill in the middle of an atomic write (a checkpoint's can be
        hundreds of MB); no other writer uses this run folder while it trains."""
        if self.rank != 0:
            return
        for name in RUN_FILES:
            for tmp in self.run_dir.glob(f".{name}.*.tmp"):
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass

    def maybe_resume(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        self.load_state_dict(load_state(self.ckpt_path), self.ckpt_path)
        self._trim_log()
        if not self.quiet:
            print(f"resumed {self.ckpt_path} at step {self.step}/{self.stop_step}", file=sys.stderr)
        return True

    def _trim_log(self) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be redone)."""
        if self.rank != 0 or not self.log_path.exists():
            return
        keep = []
        for ln in self.log_path.read_text().splitlines():
            try:
                if json.loads(ln).get("step", 0) <= self.step:
                    keep.append(ln)
            except (json.JSONDecodeError, AttributeError):
                continue  # a line cut by the kill
        atomic_write_text(self.log_path, "".join(k + "\n" for k in keep))

    # ------------------------------------------------------------------ the step
    def train_step(self, x1: torch.Tensor, x2: torch.Tensor) -> Dict[str, torch.Tensor]:
        s = self.step
        lr, mm = float(self.lr[s]), float(self.mm[s])
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        if self.channels_last:
            x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            z1, z2, p1, p2 = self.online(x1, x2)
            with torch.no_grad():
                if self.model.momentum is not None:
                    self.model.momentum_update(mm)
                    t1, t2 = self.model.momentum(x1), self.model.momentum(x2)
                else:
                    t1, t2 = z1.detach(), z2.detach()
        # the loss and its rule state in the run's dtype (under autocast the projections come out in bf16)
        loss, stats = self.method(Views(*(v if v is None else v.to(self.dtype) for v in (z1, z2, t1, t2, p1, p2))), s)
        if tdist.any_rank(not bool(torch.isfinite(loss)), self.device):
            raise NonFiniteLoss(f"non-finite loss {float(loss.detach())} at step {s}", s)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        stats.update(loss=loss.detach(), lr=torch.tensor(lr), momentum=torch.tensor(mm))
        return stats

    # ------------------------------------------------------------------ the loop
    def _views(self, step: int, x: torch.Tensor):
        g = torch.Generator(device=self.device).manual_seed(self.c.seed * 7_919 + 104_729 * step + 1)
        local = x.shape[0]
        x1, x2 = self.aug(x.to(self.device, non_blocking=True), g, offset=self.rank * local, total=self.global_batch)
        return x1.to(self.dtype), x2.to(self.dtype)

    def _log(self, rec: Dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, rec["step"])

    def _knn(self) -> Optional[float]:
        t, d = self.c.train, self.c.data
        if t.knn_split == "val":  # queries carved from train: recipe choices never see the test split
            acc = None
            if self.rank == 0:
                acc = knn_eval_val(self.model.online.backbone, self.train_set, self.size, self.device,
                                   t.knn_bank, t.knn_k, t.knn_t, t.knn_val)
            if self.world > 1:
                dist.barrier()
            return acc
        try:
            test = build_dataset(d.name, "test", d.root, d.load_size)
        except UserError:
            return None
        if getattr(test, "root", None) is not None and getattr(test, "root", None) == getattr(self.train_set, "root", None):
            return None  # a folder without a test/val split: no held-out set to monitor on
        acc = None
        if self.rank == 0:
            acc = knn_eval(self.model.online.backbone, self.train_set, test, self.size, self.device,
                           t.knn_bank, t.knn_k, t.knn_t)
        if self.world > 1:
            dist.barrier()
        return acc

    def _start(self) -> None:
        """Before the first step: clear stale temps, resume (which refuses a checkpoint of another
        config before anything is written), record the config, open TensorBoard if installed."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temps()
        self.maybe_resume()
        if self.rank == 0:
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: the tensorboard extra

                self.tb = SummaryWriter(str(self.run_dir / "tb"))
            except Exception:
                self.tb = None

    def fit(self) -> Dict[str, Any]:
        """The loop, flat as facebookresearch/dino ``main_dino.py`` ``train_one_epoch``: one step, then
        whatever is :func:`due` at the new step (log, k-NN monitor, checkpoint, export)."""
        t = self.c.train
        self._start()
        self.model.train()
        sampler = StepBatches(*self.sampler_args, start=self.step, end=self.stop_step)
        bar = Progress(self.stop_step, start=self.step, enabled=t.progress and not self.quiet,
                       unit="step", desc=f"{self.method.name}/{self.method.form}{'+ema' if self.method.momentum else ''}")
        last: Dict[str, float] = {}
        t0 = time.time()
        try:
            for step, x, _ in iterate_batches(self.train_set, sampler, self.c.data.workers):
                assert step == self.step, f"data stream at step {step}, trainer at {self.step}"
                stats = self.train_step(*self._views(step, x))
                s, epoch = self.step, self.step / self.steps_per_epoch
                final, epoch_end = s == self.stop_step, due(s, self.steps_per_epoch)
                if due(s, t.log_every) or final:
                    last = {k: float(v) for k, v in stats.items()}
                    self._log({"step": s, "epoch": round(epoch, 4), **last, "time": round(time.time() - t0, 3)})
                bar.update(s, **{k: last[k] for k in ("loss", "pos_sim") if k in last})
                # k-NN monitor: every knn_every-th epoch end, and at a final step that ends no epoch
                if (epoch_end and due(s // self.steps_per_epoch, t.knn_every)) or (final and not epoch_end and t.knn_every):
                    self.last_knn = self._knn()
                    if self.last_knn is not None:
                        self._log({"step": s, "epoch": round(epoch, 4), "knn_top1": self.last_knn, "knn_split": t.knn_split})
                        bar.note(f"epoch {epoch:.2f}: k-NN top-1 {self.last_knn:.2f}% "
                                 f"(monitor: {t.knn_split} queries, {t.knn_bank}-image bank)")
                if due(s, t.ckpt_every) or epoch_end or final:
                    self.save()
                if epoch_end or final:
                    self.export()
        except NonFiniteLoss as e:
            bar.close()
            raise TrainingDiverged(f"{e}; training stopped, the last good checkpoint is kept at {self.ckpt_path}", e.step) from None
        bar.close()
        # a kill between the final checkpoint and its export leaves an older export: redo it
        if self.step == self.stop_step and self.rank == 0 and not self.export_is_current():
            if self.last_knn is None:
                self.last_knn = self._last_logged_knn()
            self.export()
        if self.tb is not None:
            self.tb.close()
        return {"run_dir": str(self.run_dir), "step": self.step, "knn_top1": self.last_knn, "precision": self.precision,
                **last}

    def close(self) -> None:
        if tdist.is_dist():
            dist.destroy_process_group()

