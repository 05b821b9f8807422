"""Conversion of transformers' ViLT classes into detrvilt's.

| transformers | detrvilt |
| --- | --- |
| `ViltModel` | `ViltModel` |
| `ViltForMaskedLM` | `ViltForPreTraining` (the ITM head, which transformers does not have, starts random) |
| `ViltForQuestionAnswering` | `ViltForQuestionAnswering` |
| `ViltForImagesAndTextClassification` | `ViltForImagesAndTextClassification` |
| `ViltForImageAndTextRetrieval` | `ViltForImageAndTextRetrieval` |

Keys are renamed by regular expressions (transformers' names of 4.x and 5.x), and the separate query, key and
value projections are concatenated into our fused `qkv` (timm's layout, in which the official checkpoints and the
ImageNet ViT store them). The config copies the architecture; two settings that transformers' ViLT fixes
differently from the official code are carried over so that a converted model computes what the original did:
its single `layer_norm_eps` (1e-12) goes into both of our epsilons, and its dropout probabilities are kept.
`max_image_length` is copied; note that ours samples patches only in training, while transformers also samples in
eval when it is > 0.
"""

import re

import torch

from ...modeling import vilt
from ..common import load_converted_weights

# (pattern, replacement) applied in order to every state-dict key of the transformers model.
_RENAMES = [
    (r"embeddings\.text_embeddings\.LayerNorm\.", "embeddings.text_embeddings.layer_norm."),
    (r"embeddings\.patch_embeddings\.projection\.", "embeddings.patch_projection."),
    (r"(^|\.)embeddings\.token_type_embeddings\.", r"\1embeddings.modality_type_embeddings."),
    (r"encoder\.layer\.(\d+)\.layernorm_before\.", r"encoder.layers.\1.norm1."),
    (r"encoder\.layer\.(\d+)\.layernorm_after\.", r"encoder.layers.\1.norm2."),
    (r"encoder\.layer\.(\d+)\.attention\.(?:attention|self)\.(query|key|value)\.", r"encoder.layers.\1.attn.\2."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.attn.proj."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.layers.\1.mlp.fc1."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.layers.\1.mlp.fc2."),
    (r"mlm_score\.transform\.LayerNorm\.", "mlm_score.transform.layer_norm."),
    (r"^mlm_score\.bias$", "mlm_score.decoder.bias"),  # transformers 4.x kept the decoder bias beside it
]
# Buffers of transformers' text embeddings (non-persistent in 5.x, saved by some 4.x checkpoints).
_DROPPED = re.compile(r"text_embeddings\.(position_ids|token_type_ids)$")
_QKV = re.compile(r"^(.*encoder\.layers\.\d+\.attn)\.(query|key|value)\.(weight|bias)$")

_COPIED_FIELDS = [
    "vocab_size", "type_vocab_size", "modality_type_vocab_size", "max_position_embeddings", "hidden_size",
    "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "initializer_range", "num_channels", "qkv_bias", "max_image_length", "num_images",
]

_CLASSES = {
    "ViltModel": vilt.ViltModel,
    "ViltForMaskedLM": vilt.ViltForPreTraining,
    "ViltForQuestionAnswering": vilt.ViltForQuestionAnswering,
    "ViltForImagesAndTextClassification": vilt.ViltForImagesAndTextClassification,
    "ViltForImageAndTextRetrieval": vilt.ViltForImageAndTextRetrieval,
}


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"only square {name} convert, got {value!r}")
        value = value[0]
    return int(value)


def convert_transformers_vilt_config(hf_config) -> vilt.ViltConfig:
    """Build a [`ViltConfig`] that computes what a transformers `ViltConfig` does."""
    fields = {name: getattr(hf_config, name) for name in _COPIED_FIELDS if getattr(hf_config, name, None) is not None}
    eps = hf_config.layer_norm_eps
    extra = {}
    if getattr(hf_config, "id2label", None):
        extra["id2label"] = {int(k): v for k, v in hf_config.id2label.items()}
    else:
        extra["num_labels"] = hf_config.num_labels
    return vilt.ViltConfig(
        image_size=_square(hf_config.image_size, "image_size"),
        patch_size=_square(hf_config.patch_size, "patch_size"),
        layer_norm_eps=eps,
        text_layer_norm_eps=eps,
        pad_token_id=getattr(hf_config, "pad_token_id", None),
        **fields,
        **extra,
    )


def convert_transformers_vilt_state_dict(state_dict: dict) -> dict:
    """Rename the keys of a transformers ViLT state dict to ours and fuse query/key/value into `qkv`."""
    renamed, pieces = {}, {}
    for key, value in state_dict.items():
        if _DROPPED.search(key):
            continue
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        match = _QKV.match(key)
        if match:
            prefix, part, kind = match.groups()
            pieces.setdefault((prefix, kind), {})[part] = value
        else:
            renamed[key] = value
    for (prefix, kind), parts in pieces.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"{prefix}: found only {sorted(parts)} of the query/key/value {kind}s")
        renamed[f"{prefix}.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return renamed


def convert_transformers_vilt(hf_model):
    """Convert a transformers ViLT model into detrvilt's, config and weights.

    Args:
        hf_model: an instance of `transformers.ViltModel`, `ViltForMaskedLM`, `ViltForQuestionAnswering`,
            `ViltForImagesAndTextClassification` or `ViltForImageAndTextRetrieval`.

    Returns:
        The matching detrvilt model (see the module docstring), on the input's device and dtype, in eval mode if
        the input was, whose outputs equal the input's (`ViltForMaskedLM` -> [`ViltForPreTraining`], whose ITM
        head is newly initialised).
    """
    name = type(hf_model).__name__
    if name not in _CLASSES:
        raise TypeError(f"hf_model must be one of transformers' {sorted(_CLASSES)}, got {name}")
    if name == "ViltModel" and getattr(hf_model, "pooler", None) is None:
        raise ValueError("transformers ViltModel without its pooling layer (add_pooling_layer=False) is not supported")
    config = convert_transformers_vilt_config(hf_model.config)
    model_class = _CLASSES[name]
    parameter = next(hf_model.parameters())
    model = model_class(config).to(device=parameter.device, dtype=parameter.dtype)
    # transformers' ViltForMaskedLM has no ITM head: ours keeps a fresh one.
    allowed_missing = {"itm_score.weight", "itm_score.bias"} if name == "ViltForMaskedLM" else ()
    load_converted_weights(model, convert_transformers_vilt_state_dict(hf_model.state_dict()), name, allowed_missing)
    model.train(hf_model.training)
    return model


__all__ = [
    "convert_transformers_vilt",
    "convert_transformers_vilt_config",
    "convert_transformers_vilt_state_dict",
]
