"""Synthetic checkpoints laid out exactly as each codebase saves them (wrappers, heads, momentum).

Each builder takes two torchvision-named ResNet state dicts (online and momentum weights) and
returns a :class:`Case`: the object to save, how to save it, and the canonical weights the reader
must recover. The files each layout imitates are cited next to the builder (and in
converters/formats.py).
"""
from __future__ import annotations

import argparse
import copy
import json
import pickle
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

SD = Dict[str, torch.Tensor]


@dataclass
class Case:
    obj: Any
    save: str  # "torch" | "pickle" | "safetensors" | "export"
    online: SD  # canonical weights expected from the online branch
    momentum: Optional[SD]  # ... from the momentum branch (None: format has none)
    heads: tuple = ()  # substrings expected among the dropped keys
    arch_small: bool = False
    meta: Optional[Dict[str, str]] = None
    default: str = "online"  # the branch read_checkpoint takes without --momentum/--online

    def write(self, path: Path) -> Path:
        if self.save == "torch":
            torch.save(self.obj, path)
        elif self.save == "pickle":
            with open(path, "wb") as f:
                pickle.dump(self.obj, f)
        elif self.save == "safetensors":
            save_file(self.obj, str(path), metadata=self.meta)
        else:
            return self.obj(path) or path  # a writer may return the file it wrote inside a folder
        return path


def canon(sd: SD) -> SD:
    return {k: v for k, v in sd.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}


def pre(prefix: str, sd: SD) -> SD:
    return {prefix + k: v for k, v in sd.items()}


def trunk(sd: SD) -> SD:
    """The ResNet without fc (solo-learn / lightly / DINO set fc = Identity)."""
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def mlp(prefix: str, dims=(8, 4), bn: bool = True) -> SD:
    out = {f"{prefix}0.weight": torch.randn(dims[0], 3), f"{prefix}0.bias": torch.randn(dims[0])}
    if bn:
        out.update({f"{prefix}1.weight": torch.ones(dims[0]), f"{prefix}1.bias": torch.zeros(dims[0]),
                    f"{prefix}1.running_mean": torch.zeros(dims[0]), f"{prefix}1.running_var": torch.ones(dims[0]),
                    f"{prefix}1.num_batches_tracked": torch.tensor(7)})
    out[f"{prefix}3.weight"] = torch.randn(dims[1], dims[0])
    return out


def optimizer_state() -> dict:
    return {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.03, "params": [0]}]}


def moco(o: SD, m: SD) -> Case:
    # facebookresearch/moco moco/builder.py + main_moco.py: DDP "module.", encoder_q/encoder_k
    # (torchvision ResNet with fc -> MLP fc.0/fc.2 for v2), queue buffers, {'epoch','arch','state_dict','optimizer'}
    def enc(sd: SD) -> SD:
        e = trunk(sd)
        e.update({"fc.0.weight": torch.randn(8, 4), "fc.0.bias": torch.randn(8), "fc.2.weight": torch.randn(4, 8), "fc.2.bias": torch.randn(4)})
        return e
    sd = {**pre("module.encoder_q.", enc(o)), **pre("module.encoder_k.", enc(m)),
          "module.queue": torch.randn(4, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return Case({"epoch": 200, "arch": "resnet18", "state_dict": sd, "optimizer": optimizer_state()}, "torch",
                canon(o), canon(m), ("MoCo queue", "classifier/projection head"))


def mocov3(o: SD, m: SD) -> Case:
    # facebookresearch/moco-v3 moco/builder.py MoCo_ResNet: base_encoder.fc = projector MLP,
    # momentum_encoder, predictor; main_moco.py saves {'epoch','arch','state_dict','optimizer','scaler'}
    sd = {**pre("module.base_encoder.", trunk(o)), **pre("module.base_encoder.fc.", mlp("")),
          **pre("module.momentum_encoder.", trunk(m)), **pre("module.momentum_encoder.fc.", mlp("")),
          **mlp("module.predictor.")}
    return Case({"epoch": 100, "arch": "resnet18", "state_dict": sd, "optimizer": optimizer_state(),
                 "scaler": {"scale": 65536.0, "_growth_tracker": 3}}, "torch",
                canon(o), canon(m), ("MoCo v3 predictor",))


def unigrad(o: SD, m: SD) -> Case:
    # fundamentalvision/UniGrad project/model.py: encoder = nn.Sequential(*list(resnet.children())[:-1]
    # + [nn.Flatten(1)]), momentum_encoder = deepcopy, projector/momentum_projector; DDP "module.";
    # lineval.py reads checkpoint['model']
    import torchvision

    def seq(sd: SD) -> SD:
        net = torchvision.models.resnet18()
        net.load_state_dict(sd)
        return nn.Sequential(*list(net.children())[:-1] + [nn.Flatten(1)]).state_dict()
    sd = {**pre("module.encoder.", seq(o)), **mlp("module.projector.0."),
          **pre("module.momentum_encoder.", seq(m)), **mlp("module.momentum_projector.0.")}
    return Case({"model": sd, "optimizer": optimizer_state(), "epoch": 800}, "torch",
                canon(o), canon(m), ("projector", "momentum branch"))


def simsiam(o: SD, m: SD) -> Case:
    # facebookresearch/simsiam simsiam/builder.py: encoder (torchvision ResNet whose fc is the
    # 3-layer projector), predictor; main_simsiam.py {'epoch','arch','state_dict','optimizer'}
    sd = {**pre("module.encoder.", trunk(o)), **pre("module.encoder.fc.", mlp("")), **mlp("module.predictor.")}
    return Case({"epoch": 100, "arch": "resnet18", "state_dict": sd, "optimizer": optimizer_state()}, "torch",
                canon(o), None, ("SimSiam predictor", "classifier/projection head"))


def _byol_mlp(dim: int) -> nn.Module:
    # byol_pytorch.py MLP(dim, projection_size, hidden_size): Linear, BatchNorm1d, ReLU, Linear
    return nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.Linear(16, 8))


class _NetWrapper(nn.Module):
    # byol_pytorch.py NetWrapper: .net (the user's network) and .projector (made on first forward)
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.projector = _byol_mlp(512)


class _ByolLearner(nn.Module):
    # byol_pytorch.py BYOL.__init__: self.net = net; online_encoder = NetWrapper(net, ...) (the same
    # module again); target_encoder = deepcopy(online_encoder) (singleton, set on the first forward);
    # online_predictor = MLP. Attributes registered in that order.
    def __init__(self, o: SD, m: SD) -> None:
        import torchvision

        super().__init__()
        net = torchvision.models.resnet18()
        net.load_state_dict(o)
        self.net = net
        self.online_encoder = _NetWrapper(net)
        self.online_predictor = _byol_mlp(8)
        self.target_encoder = copy.deepcopy(self.online_encoder)
        self.target_encoder.net.load_state_dict(m)


def byol(o: SD, m: SD) -> Case:
    # the whole learner, torch.save(learner.state_dict()): net.* aliases online_encoder.net.*
    # (byol-pytorch's README saves only `resnet`; users who save the learner get both)
    sd = _ByolLearner(o, m).state_dict()
    assert "net.conv1.weight" in sd and "online_encoder.net.conv1.weight" in sd
    return Case(sd, "torch", canon(o), canon(m), ("predictor", "projector", "alias of online_encoder.net"))


def byol_net_only(o: SD, m: SD) -> Case:
    # online and target networks without the alias (e.g. a learner saved after del learner.net)
    sd = {k: v for k, v in _ByolLearner(o, m).state_dict().items() if not k.startswith("net.")}
    return Case(sd, "torch", canon(o), canon(m), ("predictor", "projector"))


def dino(o: SD, m: SD) -> Case:
    # facebookresearch/dino main_dino.py: student = DDP(MultiCropWrapper(backbone with fc=Identity,
    # DINOHead)), teacher DDP-wrapped too for BN backbones; save_dict {'student','teacher',
    # 'optimizer','epoch','args' (argparse.Namespace),'dino_loss'}
    def head(p: str) -> SD:
        return {**mlp(p + "head.mlp."), p + "head.last_layer.weight_g": torch.ones(16, 1), p + "head.last_layer.weight_v": torch.randn(16, 4)}
    obj = {"student": {**pre("module.backbone.", trunk(o)), **head("module.")},
           "teacher": {**pre("module.backbone.", trunk(m)), **head("module.")},
           "optimizer": optimizer_state(), "epoch": 100,
           "args": argparse.Namespace(arch="resnet50", out_dim=60000, momentum_teacher=0.996),
           "dino_loss": {"center": torch.zeros(1, 16)}}
    # DINO's eval_knn.py / eval_linear.py default to --checkpoint_key teacher: so do we
    return Case(obj, "torch", canon(o), canon(m), ("DINO head",), default="momentum")


def solo_cifar_resnet18(sd: SD) -> nn.Module:
    """The backbone exactly as vturrisi/solo-learn solo/methods/base.py BaseMethod.__init__ builds it
    for cifar10/cifar100: torchvision resnet18, fc = Identity, conv1 = Conv2d(3, 64, 3, 1, padding=2),
    maxpool = Identity."""
    import torchvision

    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    net.maxpool = nn.Identity()
    net.load_state_dict(sd)
    return net


def solo_learn(o: SD, m: SD) -> Case:
    # vturrisi/solo-learn solo/methods/base.py: BaseMethod.backbone (fc = Identity; CIFAR: 3x3 stem
    # with padding=2, maxpool = Identity), classifier (online linear), BaseMomentumMethod.momentum_backbone;
    # BYOL adds projector/predictor/momentum_projector. Lightning .ckpt of LightningModule.state_dict().
    on, mo = solo_cifar_resnet18(trunk(o)).state_dict(), solo_cifar_resnet18(trunk(m)).state_dict()
    sd = {**pre("backbone.", on), **mlp("projector."), **mlp("predictor."),
          **pre("momentum_backbone.", mo), **mlp("momentum_projector."),
          "classifier.weight": torch.randn(10, 512), "classifier.bias": torch.zeros(10)}
    obj = {"epoch": 999, "global_step": 1000, "pytorch-lightning_version": "2.0.2", "state_dict": sd,
           "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [],
           "hyper_parameters": {"cfg": {"method": "byol", "backbone": {"name": "resnet18"}}}}
    return Case(obj, "torch", canon(o), canon(m), ("online linear classifier", "projector", "predictor"))


def lightly(o: SD, m: SD) -> Case:
    # lightly-ai/lightly benchmarks/imagenet/resnet50/byol.py: backbone (fc = Identity),
    # projection_head, prediction_head, teacher_backbone, teacher_projection_head, online_classifier
    sd = {**pre("backbone.", trunk(o)), **mlp("projection_head.layers."), **mlp("prediction_head.layers."),
          **pre("teacher_backbone.", trunk(m)), **mlp("teacher_projection_head.layers."),
          "online_classifier.classification_head.weight": torch.randn(10, 512),
          "online_classifier.classification_head.bias": torch.zeros(10)}
    obj = {"epoch": 99, "global_step": 100, "pytorch-lightning_version": "2.1.0", "state_dict": sd,
           "hyper_parameters": {"batch_size_per_device": 128, "num_classes": 1000}}
    return Case(obj, "torch", canon(o), canon(m), ("online linear classifier", "projection head"))


def lightly_sequential(o: SD, m: SD) -> Case:
    # lightly examples: backbone = nn.Sequential(*list(resnet.children())[:-1]) -> numbered keys;
    # momentum copy named backbone_momentum (examples/pytorch_lightning/byol.py)
    import torchvision

    def seq(sd: SD) -> SD:
        net = torchvision.models.resnet18()
        net.load_state_dict(sd)
        return nn.Sequential(*list(net.children())[:-1]).state_dict()
    sd = {**pre("backbone.", seq(o)), **mlp("projection_head.layers."), **mlp("prediction_head.layers."),
          **pre("backbone_momentum.", seq(m)), **mlp("projection_head_momentum.layers.")}
    return Case({"epoch": 9, "pytorch-lightning_version": "1.9.0", "state_dict": sd}, "torch", canon(o), canon(m),
                ("projection head",))


def lightly_tutorial(o: SD, m: SD) -> Case:
    # lightly-ai/lightly docs/source/tutorials_source/package/tutorial_simclr_clothing.py: backbone =
    # nn.Sequential(*list(resnet18().children())[:-1]); torch.save({'resnet18_parameters':
    # backbone.state_dict()}, 'model.pth')
    import torchvision

    resnet = torchvision.models.resnet18()
    resnet.load_state_dict(o)
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    return Case({"resnet18_parameters": backbone.state_dict()}, "torch", canon(o), None)


class _HistoryBufferLike:
    """The pickled state of open-mmlab/mmengine mmengine/logging/history_buffer.py HistoryBuffer, used
    only when mmengine is not installed: max_length, _log_history, _count_history (numpy arrays) and,
    as its __getstate__ adds since 0.7.3, statistics_methods (references to its own methods)."""

    def __init__(self, log, count, max_length: int = 1000000) -> None:
        self.max_length = max_length
        self._log_history = np.array(log)
        self._count_history = np.array(count)

    def min(self):
        return self._log_history.min()

    def max(self):
        return self._log_history.max()

    def __getstate__(self) -> dict:
        cls = type(self)
        return {**self.__dict__, "statistics_methods": {"min": cls.min, "max": cls.max}}


def _history_buffer_cls():
    """mmengine's HistoryBuffer when installed, else the stand-in under mmengine's module path,
    so the pickle names the same globals either way."""
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        return HistoryBuffer, {}
    except ImportError:  # pragma: no cover - mmengine is installed in CI
        pass
    name = "mmengine.logging.history_buffer"
    cls = type("HistoryBuffer", (_HistoryBufferLike,), {"__module__": name, "__qualname__": "HistoryBuffer"})
    for meth in ("min", "max"):  # methods pickle by qualname: HistoryBuffer.min
        fn = types.FunctionType(getattr(_HistoryBufferLike, meth).__code__, globals(), meth)
        fn.__qualname__, fn.__module__ = f"HistoryBuffer.{meth}", name
        setattr(cls, meth, fn)
    mods = {n: types.ModuleType(n) for n in ("mmengine", "mmengine.logging", name)}
    mods[name].HistoryBuffer = cls
    return cls, mods


def message_hub_state(hb: Any) -> dict:
    """MessageHub.state_dict() (mmengine/logging/message_hub.py): log_scalars (a HistoryBuffer per
    key), runtime_info (hooks' update_info: ints, strings, numpy metrics from val), resumed_keys.
    Built by a real MessageHub when mmengine is installed."""
    scalars = {"train/loss": ([0.91, 0.87], [1, 1]), "train/lr": ([0.03, 0.03], [1, 1]),
               "val/accuracy/top1": ([41.5], [1])}
    info = {"epoch": 200, "iter": 1000, "max_iters": 1000, "seed": 42, "cfg": "model = dict(...)",
            "val/accuracy/top1": np.float64(41.5), "val/confusion": np.eye(3, dtype=np.float32),
            "keep_ckpt_ids": [199, 200], "last_ckpt": "work_dirs/x/epoch_200.pth"}
    try:
        from mmengine.logging import MessageHub
    except ImportError:  # pragma: no cover - mmengine is installed in CI
        return {"log_scalars": {k: hb(*v) for k, v in scalars.items()}, "runtime_info": info,
                "resumed_keys": {k: True for k in [*scalars, *info]}}
    hub = MessageHub.get_instance("transfer-tests-fixture")
    for k, (vals, counts) in scalars.items():
        for v, c in zip(vals, counts):
            hub.update_scalar(k, v, c)
    for k, v in info.items():
        hub.update_info(k, v)
    return hub.state_dict()


def mmengine_save(obj_fn: Callable[[Any], dict]) -> Callable[[Path], None]:
    """An mmengine Runner.save_checkpoint dict (open-mmlab/mmengine mmengine/runner/runner.py: meta,
    state_dict, message_hub, optimizer, param_schedulers) written by mmengine.runner.checkpoint.
    save_checkpoint when installed (else torch.save, which is what it calls)."""
    def write(path: Path) -> None:
        cls, mods = _history_buffer_cls()
        saved = {n: sys.modules.get(n) for n in mods}
        sys.modules.update(mods)
        try:
            obj = obj_fn(cls)
            try:
                from mmengine.runner.checkpoint import save_checkpoint
            except ImportError:  # pragma: no cover - mmengine is installed in CI
                torch.save(obj, path)
            else:
                save_checkpoint(obj, str(path))
        finally:
            for n, old in saved.items():
                if old is None:
                    sys.modules.pop(n, None)
                else:  # pragma: no cover
                    sys.modules[n] = old
    return write


def mmselfsup(o: SD, m: SD) -> Case:
    # open-mmlab/mmselfsup 1.x mmselfsup/models/algorithms/mocov2.py: backbone (mmcls-style ResNet,
    # torchvision names, no fc), neck, head, encoder_k = ExponentialMovingAverage(Sequential(backbone,
    # neck)) -> encoder_k.module.0/1 + encoder_k.steps, queue; mmengine ckpt {'meta','state_dict',...}
    sd = {**pre("backbone.", trunk(o)), **mlp("neck.mlp."),
          **pre("encoder_k.module.0.", trunk(m)), **mlp("encoder_k.module.1.mlp."), "encoder_k.steps": torch.tensor(5),
          "queue": torch.randn(4, 16), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    obj = {"meta": {"epoch": 200, "iter": 1000, "mmengine_version": "0.7.0", "dataset_meta": {}},
           "state_dict": sd, "optimizer": optimizer_state(), "message_hub": {"log_scalars": {}}}
    return Case(obj, "torch", canon(o), canon(m), ("neck", "MoCo queue"))


def mmselfsup_epoch(o: SD, m: SD) -> Case:
    # an mmselfsup 1.x / mmpretrain work_dirs/<cfg>/epoch_200.pth as Runner.save_checkpoint writes it:
    # message_hub holds HistoryBuffers and numpy values, param_schedulers plain dicts
    sd = mmselfsup(o, m).obj["state_dict"]

    def build(hb: Any) -> dict:
        return {"meta": {"epoch": 200, "iter": 1000, "cfg": "model = dict(type='MoCo')", "seed": 42,
                         "experiment_name": "mocov2_resnet18", "time": "20240101_000000",
                         "mmengine_version": "0.10.3", "dataset_meta": {"classes": ("a", "b")}},
                "state_dict": sd, "message_hub": message_hub_state(hb), "optimizer": optimizer_state(),
                "param_schedulers": [{"T_max": 200, "eta_min": 0.0, "base_values": [0.03], "last_step": 200,
                                      "by_epoch": True, "_global_step": 1000, "verbose": False}]}
    return Case(mmengine_save(build), "export", canon(o), canon(m), ("neck", "MoCo queue"))


def vissl(o: SD, m: SD) -> Case:
    # facebookresearch/vissl: checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"] with
    # "_feature_blocks." keys and ["heads"] (extra_scripts/convert_vissl_to_torchvision.py)
    model = {"trunk": pre("_feature_blocks.", trunk(o)), "heads": {"0.clf.0.weight": torch.randn(10, 512)}}
    obj = {"phase_idx": 399, "iteration_num": 1000, "type": "checkpoint",
           "classy_state_dict": {"base_model": {"model": model, "meta": {}}, "meta": {}, "train_phase_idx": 199}}
    return Case(obj, "torch", canon(o), None, ("VISSL heads",))


def _moco_d2_name(k: str) -> str:
    # the string replacements of moco detection/convert-pretrain-to-detectron2.py, restated
    if "layer" not in k:
        k = "stem." + k
    for t in [1, 2, 3, 4]:
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in [1, 2, 3]:
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    return k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def detectron2_pkl(o: SD, m: SD) -> Case:
    # moco detection/convert-pretrain-to-detectron2.py output: pickle {"model": numpy arrays,
    # "__author__": "MOCO", "matching_heuristics": True}, num_batches_tracked kept
    model = {_moco_d2_name(k): v.numpy() for k, v in trunk(o).items()}
    return Case({"model": model, "__author__": "MOCO", "matching_heuristics": True}, "pickle", canon(o), None)


def detectron2_final(o: SD, m: SD) -> Case:
    # detectron2 trained detector (DetectionCheckpointer model_final.pth): {"model", "iteration", ...},
    # backbone.bottom_up.<res names>, FPN, RPN, ROI heads
    model = {**pre("backbone.bottom_up.", {_moco_d2_name(k): v for k, v in canon(o).items()}),
             "backbone.fpn_lateral2.weight": torch.randn(4, 64, 1, 1), "proposal_generator.rpn_head.conv.weight": torch.randn(4, 4, 3, 3),
             "roi_heads.box_predictor.cls_score.weight": torch.randn(81, 8)}
    return Case({"model": model, "iteration": 89999, "__author__": "x"}, "torch", canon(o), None, ("FPN", "RPN", "ROI heads"))


def timm_ckpt(o: SD, m: SD) -> Case:
    # huggingface/pytorch-image-models timm/utils/checkpoint_saver.py: {'epoch','arch','state_dict',
    # 'optimizer','version','args','metric','state_dict_ema'}
    obj = {"epoch": 299, "arch": "resnet18", "state_dict": o, "optimizer": optimizer_state(), "version": 2,
           "args": argparse.Namespace(model="resnet18", lr=0.5), "metric": 71.2, "state_dict_ema": m}
    return Case(obj, "torch", canon(o), canon(m), ("classifier/projection head",))


def timm_hub(o: SD, m: SD) -> Case:
    # a safetensors with {"format": "pt"} metadata (what our timm writer and the Hugging Face
    # safetensors conversion write), torchvision names
    return Case({k: v.contiguous() for k, v in o.items()}, "safetensors", canon(o), None, meta={"format": "pt"})


def _timm_hub_config() -> dict:
    # huggingface/pytorch-image-models timm/models/_hub.py save_config_for_hf: architecture,
    # num_classes, num_features, global_pool, pretrained_cfg
    return {"architecture": "resnet18", "num_classes": 1000, "num_features": 512, "global_pool": "avg",
            "pretrained_cfg": {"tag": "a1_in1k", "input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
                               "std": [0.229, 0.224, 0.225], "classifier": "fc", "first_conv": "conv1"}}


def _timm_save_for_hf(o: SD, path: Path, safe: bool) -> None:
    """huggingface/pytorch-image-models timm/models/_hub.py save_for_hf: model.safetensors (no metadata;
    safe_serialization=True) or pytorch_model.bin (torch.save), plus config.json. Real timm when
    installed, else the same two files written by hand."""
    try:
        import timm
        from timm.models._hub import save_for_hf
    except ImportError:  # pragma: no cover - timm is installed in CI
        path.mkdir()
        if safe:
            save_file({k: v.contiguous() for k, v in o.items()}, str(path / "model.safetensors"))
        else:
            torch.save(o, path / "pytorch_model.bin")
        (path / "config.json").write_text(json.dumps(_timm_hub_config(), indent=2))
        return
    model = timm.create_model("resnet18", pretrained=False)
    model.load_state_dict(o)
    save_for_hf(model, str(path), safe_serialization=safe)


def timm_hub_folder(o: SD, m: SD) -> Case:
    # a hub snapshot's model.safetensors, given by its file name
    def write(path: Path) -> Path:
        _timm_save_for_hf(o, path, safe=True)
        return path / "model.safetensors"
    return Case(write, "export", canon(o), None, ("classifier/projection head",))


def timm_hub_bin(o: SD, m: SD) -> Case:
    # the legacy pytorch_model.bin variant; the folder itself is given to convert
    def write(path: Path) -> Path:
        _timm_save_for_hf(o, path, safe=False)
        assert (path / "pytorch_model.bin").is_file()
        return path
    return Case(write, "export", canon(o), None, ("classifier/projection head",))


def torchvision_plain(o: SD, m: SD) -> Case:
    return Case(o, "torch", canon(o), None, ("classifier/projection head",))


def torchvision_imagenet_example(o: SD, m: SD) -> Case:
    # pytorch/examples imagenet/main.py: {'epoch','arch','state_dict' (DataParallel "module."),'best_acc1','optimizer'}
    return Case({"epoch": 90, "arch": "resnet18", "state_dict": pre("module.", o), "best_acc1": torch.tensor(69.7),
                 "optimizer": optimizer_state()}, "torch", canon(o), None)


def mmseg_model(o: SD, m: SD) -> Case:
    # mmsegmentation trained segmentor: {'meta','state_dict': backbone., decode_head., auxiliary_head.}
    sd = {**pre("backbone.", trunk(o)), "decode_head.conv_seg.weight": torch.randn(21, 8, 1, 1),
          "auxiliary_head.conv_seg.weight": torch.randn(21, 8, 1, 1)}
    return Case({"meta": {"epoch": 1}, "state_dict": sd}, "torch", canon(o), None, ("decode head",))


def transfer_ckpt(o: SD, m: SD) -> Case:
    # transfer/checkpoint.py save_state: {'model': siamese state dict, 'step', ...}
    sd = {**pre("online.backbone.", trunk(o)), **mlp("online.projector."), **mlp("online.predictor."),
          **pre("momentum.backbone.", trunk(m)), **mlp("momentum.projector.")}
    return Case({"model": sd, "step": 3, "epoch": 1, "optimizer": optimizer_state()}, "torch", canon(o), canon(m),
                ("online heads",))


def transfer_export(o: SD, m: SD) -> Case:
    from transfer.backbones import build_backbone
    from transfer.checkpoint import export_backbone

    def write(path: Path) -> None:
        bb = build_backbone("resnet18")
        bb.load_state_dict(trunk(o))
        export_backbone(path, bb, {"method": "byol", "form": "gradient"})
    return Case(write, "export", canon(o), None)


# format name -> builders (a format may have several real-world layouts)
CASES: Dict[str, Dict[str, Callable[[SD, SD], Case]]] = {
    "moco": {"moco_v2": moco},
    "mocov3": {"mocov3": mocov3},
    "unigrad": {"unigrad": unigrad},
    "simsiam": {"simsiam": simsiam},
    "byol": {"byol_pytorch_learner": byol, "byol_pytorch_nets": byol_net_only},
    "dino": {"dino": dino},
    "solo-learn": {"solo_learn": solo_learn},
    "lightly": {"lightly_benchmark": lightly, "lightly_sequential": lightly_sequential},
    "lightly-tutorial": {"lightly_tutorial_clothing": lightly_tutorial},
    "mmselfsup": {"mmselfsup_mocov2": mmselfsup, "mmengine_epoch_pth": mmselfsup_epoch},
    "vissl": {"vissl": vissl},
    "detectron2": {"d2_moco_pkl": detectron2_pkl, "d2_model_final": detectron2_final},
    "timm-ckpt": {"timm_train": timm_ckpt},
    "timm": {"timm_pt_meta": timm_hub, "timm_hub_folder": timm_hub_folder, "timm_hub_bin": timm_hub_bin},
    "torchvision": {"tv_plain": torchvision_plain, "tv_imagenet_example": torchvision_imagenet_example},
    "mmseg": {"mmseg_segmentor": mmseg_model},
    "transfer-ckpt": {"transfer_ckpt": transfer_ckpt},
    "transfer-export": {"transfer_export": transfer_export},
}
