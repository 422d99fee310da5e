"""Detection data: COCO-json and Pascal-VOC readers, the deepforest NEON tree tiles, and the
synthetic ``shapes_det`` writer. Every reader returns a :class:`DetSplit`."""
from .coco import read_coco
from .records import DetImage, DetSplit, check_nonempty, clean_box, drop_note
from .shapes import SHAPE_CAT_IDS, SHAPE_CLASSES, write_shapes_coco, write_shapes_voc
from .trees import deepforest_data_dir, write_tree_tiles
from .voc import VOC_CLASSES, read_voc

__all__ = ["DetImage", "DetSplit", "VOC_CLASSES", "SHAPE_CLASSES", "SHAPE_CAT_IDS", "check_nonempty", "clean_box",
           "deepforest_data_dir", "drop_note", "read_coco", "read_voc", "write_shapes_coco", "write_shapes_voc",
           "write_tree_tiles"]
