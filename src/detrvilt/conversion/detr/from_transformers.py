"""Conversion of transformers' DETR (``DetrForObjectDetection``, ``DetrModel``) into detrvilt's.

Our parameter names follow transformers 5.x, so the weights convert by renaming a few keys; older transformers
releases used other names for the same tensors, and those are renamed as well. Only the timm-backbone variant
(`use_timm_backbone=True`, the one facebook/detr-* checkpoints use) is supported: the AutoBackbone ResNet
variant names its layers differently.

One behavioural difference is carried over on purpose: transformers' decoder feeds each layer the *normalized*
output of the previous one when its ``auxiliary_loss`` is on (the official DETR does not). The converted config
sets ``decoder_chained_norm`` to that flag, so a converted model computes exactly what the original computed.

Which parameters are trainable is not copied: it follows our config (``freeze_backbone_stem``, the paper's frozen
stem and first stage). transformers 5.x freezes nothing in a timm backbone, since its check looks for "resnet"
in the backbone config's model type, which is "timm_backbone".
"""

import re

from ...modeling.detr import DetrConfig, DetrForObjectDetection, DetrModel
from ..common import load_converted_weights

# (pattern, replacement) applied in order to every state-dict key of the transformers model.
_RENAMES = [
    (r"\.o_proj\.", ".out_proj."),  # transformers >= 5.x names the output projection o_proj
    (r"backbone\.conv_encoder\.model\.", "backbone.model."),  # transformers 4.x wrapped the timm model once more
    (r"backbone\.position_embedding\.", "position_embedding."),
    (r"(layers\.\d+)\.(fc[12])\.", r"\1.mlp.\2."),  # 4.x kept the feed-forward layers directly in the layer
]

_COPIED_FIELDS = [
    "num_channels", "num_queries", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "activation_function", "dropout",
    "attention_dropout", "activation_dropout", "auxiliary_loss", "position_embedding_type", "init_std",
    "init_xavier_std", "class_cost", "bbox_cost", "giou_cost", "bbox_loss_coefficient", "giou_loss_coefficient",
    "eos_coefficient",
]


def _timm_backbone_name(hf_config) -> tuple[str, bool]:
    """The timm model name and whether the last stage is dilated, from a transformers DETR config."""
    backbone_config = getattr(hf_config, "backbone_config", None)
    if backbone_config is not None and getattr(backbone_config, "model_type", None) == "timm_backbone":
        return backbone_config.backbone, getattr(backbone_config, "output_stride", None) == 16
    if getattr(hf_config, "use_timm_backbone", False) and getattr(hf_config, "backbone", None):
        return hf_config.backbone, bool(getattr(hf_config, "dilation", False))
    kind = getattr(backbone_config, "model_type", None)
    raise ValueError(
        f"only transformers DETR models with a timm backbone can be converted, got a backbone of type {kind!r}"
    )


def convert_transformers_config(hf_config) -> DetrConfig:
    """Build a [`DetrConfig`] equal in architecture, matching costs and loss weights to a transformers one."""
    backbone, dilation = _timm_backbone_name(hf_config)
    fields = {name: getattr(hf_config, name) for name in _COPIED_FIELDS if hasattr(hf_config, name)}
    return DetrConfig(
        backbone=backbone,
        dilation=dilation,
        decoder_chained_norm=bool(hf_config.auxiliary_loss),
        id2label={int(k): v for k, v in hf_config.id2label.items()},
        **fields,
    )


def convert_transformers_state_dict(state_dict: dict) -> dict:
    """Rename the keys of a transformers DETR state dict to ours (tensors are shared, not copied)."""
    converted = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


def convert_transformers_detr(hf_model) -> DetrForObjectDetection | DetrModel:
    """Convert a transformers `DetrForObjectDetection` (or `DetrModel`) into detrvilt's, config and weights.

    Args:
        hf_model: an instance of `transformers.DetrForObjectDetection` or `transformers.DetrModel` with a timm
            backbone.

    Returns:
        `DetrForObjectDetection` (or `DetrModel`) in eval mode if the input was, on the input's device and dtype,
        whose outputs equal the input's.
    """
    name = type(hf_model).__name__
    if name not in ("DetrForObjectDetection", "DetrModel"):
        raise TypeError(f"hf_model must be a transformers DetrForObjectDetection or DetrModel, got {name}")
    config = convert_transformers_config(hf_model.config)
    model_class = DetrForObjectDetection if name == "DetrForObjectDetection" else DetrModel
    parameter = next(hf_model.parameters())
    model = model_class(config).to(device=parameter.device, dtype=parameter.dtype)
    load_converted_weights(model, convert_transformers_state_dict(hf_model.state_dict()), name)
    model.train(hf_model.training)
    return model


__all__ = [
    "convert_transformers_config",
    "convert_transformers_detr",
    "convert_transformers_state_dict",
]
