"""Checkpoints from transformers and from the official repositories (facebookresearch/detr ``.pth``, dandelin/ViLT
``.ckpt``) into detrvilt's models, and export to ONNX (``detrvilt.conversion.onnx_export``)."""

from .checkpoints import convert_checkpoint
from .detr.from_official import convert_official_detr
from .detr.from_transformers import (
    convert_transformers_config,
    convert_transformers_detr,
    convert_transformers_state_dict,
)
from .detr.from_transformers_segmentation import (
    convert_transformers_detr_segmentation,
    convert_transformers_segmentation_config,
    convert_transformers_segmentation_state_dict,
)
from .official import load_official_checkpoint
from .vilt.from_official import convert_official_vilt
from .vilt.from_transformers import (
    convert_transformers_vilt,
    convert_transformers_vilt_config,
    convert_transformers_vilt_state_dict,
)

__all__ = [
    "convert_checkpoint",
    "convert_official_detr",
    "convert_official_vilt",
    "convert_transformers_config",
    "convert_transformers_detr",
    "convert_transformers_detr_segmentation",
    "convert_transformers_segmentation_config",
    "convert_transformers_segmentation_state_dict",
    "convert_transformers_state_dict",
    "convert_transformers_vilt",
    "convert_transformers_vilt_config",
    "convert_transformers_vilt_state_dict",
    "load_official_checkpoint",
]
