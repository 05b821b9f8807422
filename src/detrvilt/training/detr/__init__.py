"""DETR's training: arguments, the paper's optimizer groups and step decay, `DetrTrainer`, COCO mAP from raw outputs,
the recipes the scripts call, the panoptic head's loop, and the demo."""
