"""The source formats the readers recognise, as data: where the state dict sits, which key
prefix holds the online and the momentum backbone, which prefixes are heads, and a signature.

Each entry cites the file of the codebase that writes that layout. Detection (:func:`detect`)
tries the signatures from the most specific to the most generic and names the first that fits.

Which branch is taken by default follows each method's own evaluation code (``default_branch``,
with the reason in ``branch_why``): the online encoder everywhere except DINO, whose
``eval_knn.py`` and ``eval_linear.py`` load ``--checkpoint_key teacher``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from transfer.errors import UserError

from .tables import D2_TO_TORCHVISION, IDENTITY, RenameTable

Keys = Sequence[str]
Signature = Callable[[Any, Keys, Mapping[str, Any]], bool]  # (top object, flat keys, file metadata)


@dataclass(frozen=True)
class Layout:
    """How one codebase lays out its checkpoint."""

    name: str
    title: str
    cite: str  # repository and file that write this layout
    signature: Signature
    containers: Tuple[Tuple[str, ...], ...] = ((),)  # candidate paths to the state dict
    merge: Tuple[str, ...] = ()  # or: these top-level dicts, flattened under "<name>."
    online: Tuple[str, ...] = ("",)  # prefixes of the online backbone, first present wins
    momentum: Tuple[str, ...] = ()  # prefixes of the momentum / teacher / EMA backbone
    heads: Tuple[Tuple[str, str], ...] = ()  # (prefix, reason): dropped and reported
    table: RenameTable = IDENTITY  # applied to a key after its branch prefix is stripped
    priority: int = 0  # higher = tried first
    default_branch: str = "online"  # what the method's own evaluation reads: "online" or "momentum"
    branch_why: str = ""  # where that default comes from (printed with the report)
    stem_padding: Optional[int] = None  # padding of a 3x3 small-image stem, when not the usual 1

    def flat(self, top: Any) -> Optional[Dict[str, Any]]:
        """The flattened state dict this layout reads, or None if its container is absent."""
        if self.merge:
            if not isinstance(top, Mapping) or not any(isinstance(top.get(m), Mapping) for m in self.merge):
                return None
            out: Dict[str, Any] = {}
            for m in self.merge:
                if isinstance(top.get(m), Mapping):
                    _flatten(top[m], f"{m}.", out)
            return out
        for path in self.containers:
            node = top
            for part in path:
                node = node.get(part) if isinstance(node, Mapping) else None
            if isinstance(node, Mapping) and node:
                out = {}
                _flatten(node, "", out)
                if out:
                    return out
        return None


def _flatten(node: Mapping, prefix: str, out: Dict[str, Any]) -> None:
    for k, v in node.items():
        if isinstance(v, Mapping):
            _flatten(v, f"{prefix}{k}.", out)
        else:
            out[f"{prefix}{k}"] = v


def _has(keys: Keys, *prefixes: str) -> bool:
    return any(k.startswith(p) for k in keys for p in prefixes)


def _top(top: Any, *names: str) -> bool:
    return isinstance(top, Mapping) and all(n in top for n in names)


def _bare_resnet(keys: Keys) -> bool:
    ks = set(keys)
    for p in ("", "module."):
        if f"{p}conv1.weight" in ks and f"{p}layer1.0.conv1.weight" in ks:
            return True
    return False


_SOLO_HEADS = (
    ("projector.", "projector"), ("momentum_projector.", "momentum projector"),
    ("predictor.", "predictor"), ("classifier.", "online linear classifier"),
    ("momentum_classifier.", "momentum linear classifier"), ("prototypes.", "SwAV prototypes"),
    ("head.", "DINO head"), ("momentum_head.", "DINO momentum head"), ("queue", "queue"),
)
_MM_MOMENTUM = (
    "momentum_encoder.module.0.", "encoder_k.module.0.", "target_net.module.0.", "teacher.module.0.",
    "encoder_k.0.", "target_net.0.",
)

LAYOUTS: List[Layout] = [
    Layout(
        "transfer-export", "transfer backbone export (safetensors, metadata in the header)",
        "transfer/checkpoint.py export_backbone (this repository)",
        lambda top, keys, meta: meta.get("format") == "transfer.backbone/1",
        priority=100,
    ),
    Layout(
        "transfer-ckpt", "transfer training checkpoint (checkpoint.pt)",
        "transfer/checkpoint.py save_state (this repository): state['model'] of the siamese model",
        lambda top, keys, meta: _top(top, "model", "step") and _has(keys, "online.backbone."),
        containers=(("model",),), online=("online.backbone.",), momentum=("momentum.backbone.",),
        heads=(("online.", "online heads (projector/predictor)"), ("momentum.", "momentum heads")),
        priority=90,
    ),
    Layout(
        "dino", "DINO (student/teacher)",
        "facebookresearch/dino main_dino.py save_dict {'student','teacher',...}; utils.MultiCropWrapper(backbone, head)",
        lambda top, keys, meta: _top(top, "student", "teacher"),
        merge=("student", "teacher"),
        online=("student.module.backbone.", "student.backbone."),
        momentum=("teacher.module.backbone.", "teacher.backbone."),
        heads=(("student.", "DINO head"), ("teacher.", "DINO head")),
        priority=80,
        default_branch="momentum",
        branch_why="DINO evaluates the teacher: facebookresearch/dino eval_knn.py and eval_linear.py "
        "default to --checkpoint_key teacher",
    ),
    Layout(
        "mocov3", "MoCo v3",
        "facebookresearch/moco-v3 moco/builder.py (base_encoder, momentum_encoder, predictor); main_moco.py save_checkpoint",
        lambda top, keys, meta: _has(keys, "module.base_encoder.", "base_encoder."),
        containers=(("state_dict",), ()),
        online=("module.base_encoder.", "base_encoder."), momentum=("module.momentum_encoder.", "momentum_encoder."),
        heads=(("module.predictor.", "MoCo v3 predictor"), ("predictor.", "MoCo v3 predictor")),
        priority=70,
    ),
    Layout(
        "moco", "MoCo v1/v2",
        "facebookresearch/moco moco/builder.py (encoder_q, encoder_k, queue); main_moco.py save_checkpoint",
        lambda top, keys, meta: _has(keys, "module.encoder_q.", "encoder_q.") and not _top(top, "meta"),
        containers=(("state_dict",), ()),
        online=("module.encoder_q.", "encoder_q."), momentum=("module.encoder_k.", "encoder_k."),
        heads=(("module.queue", "MoCo queue"), ("queue", "MoCo queue")),
        priority=70,
    ),
    Layout(
        "unigrad", "UniGrad (encoder as nn.Sequential of the ResNet's children)",
        "fundamentalvision/UniGrad project/model.py SiameseNet (encoder, momentum_encoder, projector); lineval.py reads checkpoint['model']",
        lambda top, keys, meta: _has(keys, "module.encoder.0.", "module.momentum_encoder.0."),
        containers=(("model",), ("state_dict",), ()),
        online=("module.encoder.",), momentum=("module.momentum_encoder.",),
        heads=(("module.projector.", "projector"), ("module.momentum_projector.", "momentum projector")),
        priority=70,
    ),
    Layout(
        "simsiam", "SimSiam",
        "facebookresearch/simsiam simsiam/builder.py (encoder with fc = projector, predictor); main_simsiam.py",
        lambda top, keys, meta: _has(keys, "module.encoder.conv1.") and _has(keys, "module.predictor."),
        containers=(("state_dict",), ()),
        online=("module.encoder.",),
        heads=(("module.predictor.", "SimSiam predictor"),),
        priority=65,
    ),
    Layout(
        "byol", "BYOL online/target networks (byol-pytorch)",
        "lucidrains/byol-pytorch byol_pytorch/byol_pytorch.py (online_encoder = NetWrapper(net), target_encoder, online_predictor)",
        lambda top, keys, meta: _has(keys, "online_encoder.net.", "module.online_encoder.net."),
        containers=(("state_dict",), ()),
        online=("online_encoder.net.", "module.online_encoder.net."),
        momentum=("target_encoder.net.", "module.target_encoder.net."),
        heads=(
            # BYOL.__init__ keeps ``self.net = net`` and wraps the same module in online_encoder, so a
            # whole learner's state_dict() lists every online weight twice: net.* and online_encoder.net.*
            ("net.", "alias of online_encoder.net (BYOL.net is the same module)"),
            ("module.net.", "alias of online_encoder.net (BYOL.net is the same module)"),
            ("online_encoder.projector.", "projector"), ("module.online_encoder.projector.", "projector"),
            ("target_encoder.projector.", "target projector"), ("module.target_encoder.projector.", "target projector"),
            ("online_predictor.", "predictor"), ("module.online_predictor.", "predictor"),
        ),
        priority=65,
    ),
    Layout(
        "vissl", "VISSL (classy_state_dict, trunk._feature_blocks)",
        "facebookresearch/vissl extra_scripts/convert_vissl_to_torchvision.py (classy_state_dict.base_model.model.trunk, _feature_blocks.)",
        lambda top, keys, meta: _has(keys, "trunk._feature_blocks.", "_feature_blocks."),
        containers=(("classy_state_dict", "base_model", "model"), ("model_state_dict",), ()),
        online=("trunk._feature_blocks.", "_feature_blocks."),
        heads=(("heads.", "VISSL heads"),),
        priority=60,
    ),
    Layout(
        "detectron2", "detectron2 (stem/res2-res5 names; .pkl or model_final.pth)",
        "facebookresearch/detectron2 detectron2/modeling/backbone/resnet.py; moco detection/convert-pretrain-to-detectron2.py",
        lambda top, keys, meta: _has(keys, "stem.conv1.", "backbone.bottom_up.stem.conv1."),
        containers=(("model",), ()),
        online=("backbone.bottom_up.", ""),
        heads=(
            ("backbone.fpn_", "FPN"), ("proposal_generator.", "RPN"), ("roi_heads.", "ROI heads"),
            ("backbone.", "detector neck"), ("linear.", "classifier"),
        ),
        table=D2_TO_TORCHVISION,
        priority=60,
    ),
    Layout(
        "lightly", "lightly (LightningModule with backbone / projection_head / teacher_backbone)",
        "lightly-ai/lightly benchmarks/imagenet/resnet50/byol.py (backbone, projection_head, prediction_head, teacher_backbone, online_classifier)",
        lambda top, keys, meta: _has(keys, "backbone.") and _has(
            keys, "projection_head.", "prediction_head.", "teacher_backbone.", "backbone_momentum.", "online_classifier."),
        containers=(("state_dict",), ()),
        online=("backbone.",), momentum=("teacher_backbone.", "backbone_momentum."),
        heads=(
            ("projection_head", "projection head"), ("prediction_head", "prediction head"),
            ("teacher_projection_head.", "teacher projection head"), ("online_classifier.", "online linear classifier"),
            ("criterion.", "loss state"), ("teacher_head.", "teacher head"), ("student_head.", "student head"),
        ),
        priority=50,
    ),
    Layout(
        "lightly-tutorial", "lightly tutorial save ({'resnet18_parameters': nn.Sequential trunk state_dict})",
        "lightly-ai/lightly docs/source/tutorials_source/package/tutorial_simclr_clothing.py: "
        "torch.save({'resnet18_parameters': backbone.state_dict()}) with backbone = nn.Sequential(*resnet.children()[:-1])",
        lambda top, keys, meta: _top(top) and any(f"resnet{d}_parameters" in top for d in (18, 34, 50)),
        containers=(("resnet18_parameters",), ("resnet34_parameters",), ("resnet50_parameters",)),
        online=("",),
        priority=48,
    ),
    Layout(
        "solo-learn", "solo-learn (Lightning .ckpt: backbone, projector, classifier, momentum_backbone)",
        "vturrisi/solo-learn solo/methods/base.py (BaseMethod.backbone/classifier, BaseMomentumMethod.momentum_backbone)",
        lambda top, keys, meta: _has(keys, "backbone.") and _has(keys, "classifier.", "projector.", "momentum_backbone.")
        and not _top(top, "meta"),
        containers=(("state_dict",), ()),
        online=("backbone.",), momentum=("momentum_backbone.",),
        heads=_SOLO_HEADS,
        priority=45,
        stem_padding=2,  # solo/methods/base.py: CIFAR conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=2)
    ),
    Layout(
        "mmselfsup", "mmselfsup / mmpretrain (backbone, neck, head; EMA copies)",
        "open-mmlab/mmselfsup mmselfsup/models/algorithms/mocov2.py, byol.py (encoder_k / target_net = EMA(Sequential(backbone, neck)))",
        lambda top, keys, meta: _has(keys, "backbone.") and (
            _top(top, "meta", "state_dict") and _has(keys, "neck.", "head.", *_MM_MOMENTUM)),
        containers=(("state_dict",), ()),
        online=("backbone.",), momentum=_MM_MOMENTUM,
        heads=(
            ("neck.", "neck"), ("head.", "head"), ("data_preprocessor.", "data preprocessor"),
            ("momentum_encoder.", "EMA copy (neck/steps)"), ("encoder_k.", "EMA copy (neck/steps)"),
            ("target_net.", "EMA copy (neck/steps)"), ("teacher.", "EMA copy (neck/steps)"),
            ("online_net.", "duplicate of backbone/neck"), ("encoder_q.", "duplicate of backbone/neck"),
            ("queue", "MoCo queue"),
        ),
        priority=45,
    ),
    Layout(
        "mmseg", "mmsegmentation / mmdetection ResNet (v1b) weights with the backbone. prefix",
        "open-mmlab/mmsegmentation mmseg/models/backbones/resnet.py (ResNet: conv1, bn1, layer1-4, downsample.0/1)",
        lambda top, keys, meta: _has(keys, "backbone.conv1.") and all(
            k.startswith(("backbone.", "neck.", "decode_head.", "auxiliary_head.", "rpn_head.", "roi_head.", "bbox_head."))
            for k in keys),
        containers=(("state_dict",), ()),
        online=("backbone.",),
        heads=(("neck.", "neck"), ("decode_head.", "decode head"), ("auxiliary_head.", "auxiliary head"),
               ("rpn_head.", "RPN head"), ("roi_head.", "ROI head"), ("bbox_head.", "bbox head")),
        priority=40,
    ),
    Layout(
        "timm-ckpt", "timm training checkpoint (state_dict, state_dict_ema)",
        "huggingface/pytorch-image-models timm/utils/checkpoint_saver.py ('arch', 'state_dict', 'state_dict_ema', 'version')",
        lambda top, keys, meta: _top(top, "state_dict", "arch") and ("state_dict_ema" in top or "version" in top),
        merge=("state_dict", "state_dict_ema"),
        online=("state_dict.module.", "state_dict."), momentum=("state_dict_ema.module.", "state_dict_ema."),
        priority=35,
    ),
    Layout(
        "timm", "timm ResNet weights (hub folder with config.json, or model.safetensors with format=pt)",
        "huggingface/pytorch-image-models timm/models/resnet.py (conv1, bn1, layer1-4, downsample.0/1, fc); "
        "timm/models/_hub.py save_for_hf (model.safetensors / pytorch_model.bin + config.json 'architecture')",
        lambda top, keys, meta: (isinstance(meta.get("hub_config"), Mapping) or meta.get("format") == "pt")
        and _bare_resnet(keys),
        priority=30,
    ),
    Layout(
        "torchvision", "torchvision ResNet state dict (optionally in state_dict/model, DataParallel module.)",
        "pytorch/vision torchvision/models/resnet.py; pytorch/examples imagenet/main.py save_checkpoint",
        lambda top, keys, meta: _bare_resnet(keys),
        containers=(("state_dict",), ("model",), ()),
        online=("module.", ""),
        priority=10,
    ),
]
BY_NAME: Dict[str, Layout] = {layout.name: layout for layout in LAYOUTS}


def register_layout(layout: Layout) -> Layout:
    """Add a source format: :func:`detect` tries it by ``priority``, ``--source NAME`` names it
    (how-to in ``docs/architecture.md``). A name already taken is an error."""
    if layout.name in BY_NAME:
        raise ValueError(f"source format {layout.name!r} registered twice")
    LAYOUTS.append(layout)
    BY_NAME[layout.name] = layout
    return layout


def get_layout(name: str) -> Layout:
    if name not in BY_NAME:
        raise UserError(f"unknown source format {name!r}; known: {', '.join(sorted(BY_NAME))}")
    return BY_NAME[name]


def detect(top: Any, meta: Mapping[str, Any], origin: str) -> Tuple[Layout, Dict[str, Any]]:
    """The most specific layout whose signature fits, and its flattened state dict."""
    for layout in sorted(LAYOUTS, key=lambda lay: -lay.priority):
        flat = layout.flat(top)
        if flat is not None and layout.signature(top, list(flat), meta):
            return layout, flat
    keys = _some_keys(top)
    raise UserError(
        f"{origin}: unknown checkpoint layout; first keys: {keys}; formats tried: "
        f"{', '.join(lay.name for lay in sorted(LAYOUTS, key=lambda lay: -lay.priority))}"
    )


def _some_keys(top: Any, n: int = 8) -> List[str]:
    if not isinstance(top, Mapping):
        return [f"<{type(top).__name__}>"]
    out: Dict[str, Any] = {}
    _flatten(top, "", out)
    keys = [k for k, v in out.items() if isinstance(v, torch.Tensor) or hasattr(v, "shape")] or list(out)
    return keys[:n]
