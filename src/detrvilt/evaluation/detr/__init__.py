"""DETR's metrics as `evaluate` modules: COCO box mAP (`coco_map`) and panoptic quality (`panoptic_quality`)."""
