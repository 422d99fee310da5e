"""MoCo's published detectron2 configs, verbatim, as the fixture the detectron2 config builder is
checked against key by key.

Source: facebookresearch/moco, ``detection/configs/`` at commit
90e244a23d135e8facca41f8aa47541cc30c61b2 (``Base-RCNN-C4-BN.yaml``, ``pascal_voc_R_50_C4_24k.yaml``,
``pascal_voc_R_50_C4_24k_moco.yaml``) and 34020351524e9869f76cbb81fadcdb77caa32f7b
(``coco_R_50_C4_2x.yaml``; ``coco_R_50_C4_2x_moco.yaml`` from 90e244a). MIT licence.
"""

MOCO_CONFIGS = {
    "Base-RCNN-C4-BN.yaml": """\
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  RPN:
    PRE_NMS_TOPK_TEST: 6000
    POST_NMS_TOPK_TEST: 1000
  ROI_HEADS:
    NAME: "Res5ROIHeadsExtraNorm"
  BACKBONE:
    FREEZE_AT: 0
  RESNETS:
    NORM: "SyncBN"
TEST:
  PRECISE_BN:
    ENABLED: True
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.02
""",
    "pascal_voc_R_50_C4_24k.yaml": """\
_BASE_: "Base-RCNN-C4-BN.yaml"
MODEL:
  MASK_ON: False
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
  ROI_HEADS:
    NUM_CLASSES: 20
INPUT:
  MIN_SIZE_TRAIN: (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
  MIN_SIZE_TEST: 800
DATASETS:
  TRAIN: ('voc_2007_trainval', 'voc_2012_trainval')
  TEST: ('voc_2007_test',)
SOLVER:
  STEPS: (18000, 22000)
  MAX_ITER: 24000
  WARMUP_ITERS: 100
""",
    "pascal_voc_R_50_C4_24k_moco.yaml": """\
_BASE_: "pascal_voc_R_50_C4_24k.yaml"
MODEL:
  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
  WEIGHTS: "See Instructions"
  RESNETS:
    STRIDE_IN_1X1: False
INPUT:
  FORMAT: "RGB"
""",
    "coco_R_50_C4_2x.yaml": """\
_BASE_: "Base-RCNN-C4-BN.yaml"
MODEL:
  MASK_ON: True
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
  MIN_SIZE_TEST: 800
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  STEPS: (120000, 160000)
  MAX_ITER: 180000
""",
    "coco_R_50_C4_2x_moco.yaml": """\
_BASE_: "coco_R_50_C4_2x.yaml"
MODEL:
  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
  WEIGHTS: "See Instructions"
  RESNETS:
    STRIDE_IN_1X1: False
INPUT:
  FORMAT: "RGB"
""",
}


def load_moco(name: str) -> dict:
    """The merged config (``_BASE_`` chain resolved, later files win), as nested dicts; tuples
    written as YAML strings (detectron2 evaluates them) are parsed to lists."""
    import ast

    import yaml

    from transfer.config import _deep_update

    d = yaml.safe_load(MOCO_CONFIGS[name])
    base = d.pop("_BASE_", None)
    merged = load_moco(base) if base else {}

    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, str) and v.startswith("("):
            return list(ast.literal_eval(v))
        return v

    return _deep_update(merged, fix(d))  # detectron2's merge: nested mappings merge, the rest replaces


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
