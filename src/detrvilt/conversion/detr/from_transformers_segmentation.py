"""Conversion of transformers' ``DetrForSegmentation`` (DETR with the panoptic mask head) into detrvilt's.

The detector part converts as in [`convert_transformers_detr`] (the same key renames, under the ``detr.`` prefix);
the attention map and the mask head already carry transformers 5.x's names. Checkpoints saved by transformers 4.x
(e.g. the original ``facebook/detr-resnet-50-panoptic`` files) use the official repository's names for the head
(``q_linear``, ``lay1``, ``gn1``, ``adapter1``, ``out_lay``...), which are renamed too. Only the timm-backbone
variant is supported, as for detection.
"""

import re

from ...modeling.detr.configuration_detr_segmentation import DetrSegmentationConfig
from ...modeling.detr.modeling_detr_segmentation import DetrForSegmentation
from ..common import load_converted_weights
from .from_transformers import convert_transformers_config, convert_transformers_state_dict

# transformers 4.x / official head names -> transformers 5.x (ours). Applied after the detector renames.
_HEAD_RENAMES = [
    (r"^bbox_attention\.q_linear\.", "bbox_attention.q_proj."),
    (r"^bbox_attention\.k_linear\.", "bbox_attention.k_proj."),
    (r"^mask_head\.lay1\.", "mask_head.conv1.conv."),
    (r"^mask_head\.gn1\.", "mask_head.conv1.norm."),
    (r"^mask_head\.lay2\.", "mask_head.conv2.conv."),
    (r"^mask_head\.gn2\.", "mask_head.conv2.norm."),
    (r"^mask_head\.adapter([123])\.", lambda m: f"mask_head.fpn_stages.{int(m.group(1)) - 1}.fpn_adapter."),
    (r"^mask_head\.lay([345])\.", lambda m: f"mask_head.fpn_stages.{int(m.group(1)) - 3}.refine.conv."),
    (r"^mask_head\.gn([345])\.", lambda m: f"mask_head.fpn_stages.{int(m.group(1)) - 3}.refine.norm."),
    (r"^mask_head\.out_lay\.", "mask_head.output_conv."),
]

_MASK_FIELDS = ("mask_loss_coefficient", "dice_loss_coefficient")


def convert_transformers_segmentation_config(hf_config) -> DetrSegmentationConfig:
    """A [`DetrSegmentationConfig`] equal in architecture and loss weights to a transformers `DetrConfig`."""
    fields = convert_transformers_config(hf_config).to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        fields.pop(key, None)
    fields.update({name: float(getattr(hf_config, name)) for name in _MASK_FIELDS if hasattr(hf_config, name)})
    return DetrSegmentationConfig(**fields)


def convert_transformers_segmentation_state_dict(state_dict: dict) -> dict:
    """Rename the keys of a transformers `DetrForSegmentation` state dict to ours (tensors are shared, not copied)."""
    converted = {}
    for key, value in convert_transformers_state_dict(state_dict).items():
        for pattern, replacement in _HEAD_RENAMES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


def convert_transformers_detr_segmentation(hf_model) -> DetrForSegmentation:
    """Convert a transformers `DetrForSegmentation` (timm backbone) into detrvilt's, config and weights.

    Returns:
        [`DetrForSegmentation`] on the input's device and dtype, in eval mode if the input was, whose logits, boxes
        and mask logits equal the input's.
    """
    name = type(hf_model).__name__
    if name != "DetrForSegmentation":
        raise TypeError(f"hf_model must be a transformers DetrForSegmentation, got {name}")
    config = convert_transformers_segmentation_config(hf_model.config)
    parameter = next(hf_model.parameters())
    model = DetrForSegmentation(config).to(device=parameter.device, dtype=parameter.dtype)
    load_converted_weights(model, convert_transformers_segmentation_state_dict(hf_model.state_dict()), name)
    model.train(hf_model.training)
    return model


__all__ = [
    "convert_transformers_detr_segmentation",
    "convert_transformers_segmentation_config",
    "convert_transformers_segmentation_state_dict",
]
