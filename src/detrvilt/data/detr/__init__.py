"""DETR's data: COCO folders and Hub-format detection datasets, the paper's augmentations, the per-example transform
and the collator, the synthetic shapes sets (detection and panoptic), and the sources the training scripts read."""
