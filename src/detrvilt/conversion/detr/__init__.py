"""DETR checkpoints into detrvilt: transformers' `DetrForObjectDetection` / `DetrForSegmentation`
(`from_transformers*.py`) and facebookresearch/detr `.pth` files (`from_official.py`)."""
