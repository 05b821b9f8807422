"""Data for detrvilt's models: detection datasets (COCO folders, Hub format, synthetic shapes), DETR's augmentations,
the per-example transform and the collator."""

from .augmentation import PAPER_MAX_SIZE, PAPER_SCALES, DetrTrainAugmentation
from .coco import coco_id2label, detection_features, load_coco_detection, write_coco_detection
from .detection import (
    DetrDataCollator,
    DetrDetectionTransform,
    count_dropped,
    decode_image,
    objects_to_annotation,
    prepare_detection_dataset,
)
from .shapes import SHAPES, make_shapes_dataset, render_shapes_image

__all__ = [
    "DetrDataCollator",
    "DetrDetectionTransform",
    "DetrTrainAugmentation",
    "PAPER_MAX_SIZE",
    "PAPER_SCALES",
    "SHAPES",
    "coco_id2label",
    "count_dropped",
    "decode_image",
    "detection_features",
    "load_coco_detection",
    "make_shapes_dataset",
    "objects_to_annotation",
    "prepare_detection_dataset",
    "render_shapes_image",
    "write_coco_detection",
]
