"""Checkpoints from transformers (and, later, the official repositories) into detrvilt's models."""

from .detr import convert_transformers_config, convert_transformers_detr, convert_transformers_state_dict
from .vilt import convert_transformers_vilt, convert_transformers_vilt_config, convert_transformers_vilt_state_dict

__all__ = [
    "convert_transformers_config",
    "convert_transformers_detr",
    "convert_transformers_state_dict",
    "convert_transformers_vilt",
    "convert_transformers_vilt_config",
    "convert_transformers_vilt_state_dict",
]
