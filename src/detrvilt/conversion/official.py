"""Checkpoints of the official repositories into detrvilt's models: facebookresearch/detr ``.pth`` and dandelin/ViLT
``.ckpt``.

Key layouts (facts of the official code):

- DETR ``.pth``: ``{"model": state_dict, "args": argparse.Namespace, ...}``. The backbone is torchvision's ResNet under
  ``backbone.0.body.`` (same layer names as timm's), learned positions under ``backbone.1.{row,col}_embed``, the
  transformer under ``transformer.{encoder,decoder}.layers.N.`` with ``nn.MultiheadAttention``'s fused
  ``in_proj_weight`` / ``in_proj_bias`` (query, key, value stacked), ``linear1`` / ``linear2`` and ``norm1..3``,
  ``transformer.decoder.norm`` (and ``transformer.encoder.norm`` with ``--pre_norm``), then ``input_proj``,
  ``query_embed``, ``class_embed`` and ``bbox_embed.layers.{0,1,2}``.
- ViLT ``.ckpt`` (PyTorch Lightning): ``{"state_dict": ..., "hyper_parameters": {"config": {...}}}``. BERT's
  ``text_embeddings.*``, the modality ``token_type_embeddings``, timm's ViT under ``transformer.`` (``cls_token``,
  ``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``),
  ``pooler.dense``, and the heads ``mlm_score.*`` (decoder bias as ``mlm_score.bias``), ``itm_score.fc``,
  ``vqa_classifier.{0,1,3}``, ``nlvr2_classifier.{0,1,3}``, ``rank_output``. Our encoder keeps timm's fused
  ``qkv``, so only names change. Unlike transformers' conversion, the ITM head of the MLM+ITM checkpoint is kept
  ([`ViltForPreTraining.itm_score`]).

Architecture numbers are read from tensor shapes; what shapes cannot tell (attention heads, dilation, loss weights,
ViLT's ``max_image_len``) comes from the checkpoint's saved arguments when present, else the papers' defaults, and
can be overridden.
"""

from __future__ import annotations

import argparse
import re
from collections import OrderedDict

import torch

from ..modeling.detr import DetrConfig, DetrForObjectDetection
from ..modeling.vilt import (
    ViltConfig,
    ViltForImageAndTextRetrieval,
    ViltForImagesAndTextClassification,
    ViltForPreTraining,
    ViltForQuestionAnswering,
    ViltModel,
)
from .common import load_converted_weights


def load_official_checkpoint(path: str) -> dict:
    """Load an official checkpoint file with `torch.load(weights_only=True)`: tensors and plain containers only.

    DETR's training arguments (`argparse.Namespace`) are allowed as they are; any other pickled class (Lightning's
    hyper-parameter `AttributeDict`) is read as an `OrderedDict` instead of being imported, so that no code of the
    checkpoint runs and neither DETR's nor ViLT's repository (nor Lightning) is needed.
    """
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    stand_ins = [(argparse.Namespace, "argparse.Namespace")] if "argparse.Namespace" in unsafe else []
    stand_ins += [(OrderedDict, name) for name in unsafe if name != "argparse.Namespace"]
    with torch.serialization.safe_globals(stand_ins):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a checkpoint dictionary, got {type(checkpoint).__name__}")
    return checkpoint


def _settings(saved) -> dict:
    """The saved training settings (a Namespace or a mapping, possibly absent) as a plain dict."""
    if saved is None:
        return {}
    return dict(saved) if isinstance(saved, dict) else dict(vars(saved))


def _count(state_dict: dict, pattern: str) -> int:
    found = {int(m.group(1)) for key in state_dict for m in [re.match(pattern, key)] if m}
    return max(found) + 1 if found else 0


# ----------------------------------------------------------------------------------------------------------- DETR

_DETR_RENAMES = [
    (r"^backbone\.0\.body\.", "model.backbone.model."),
    (r"^backbone\.1\.row_embed\.", "model.position_embedding.row_embeddings."),
    (r"^backbone\.1\.col_embed\.", "model.position_embedding.column_embeddings."),
    (r"^input_proj\.", "model.input_projection."),
    (r"^query_embed\.", "model.query_position_embeddings."),
    (r"^transformer\.(encoder|decoder)\.norm\.", r"model.\1.layernorm."),
    (r"^transformer\.(encoder|decoder)\.layers\.", r"model.\1.layers."),
    (r"\.multihead_attn\.", ".encoder_attn."),
    (r"\.linear1\.", ".mlp.fc1."),
    (r"\.linear2\.", ".mlp.fc2."),
    (r"(encoder\.layers\.\d+)\.norm1\.", r"\1.self_attn_layer_norm."),
    (r"(encoder\.layers\.\d+)\.norm2\.", r"\1.final_layer_norm."),
    (r"(decoder\.layers\.\d+)\.norm1\.", r"\1.self_attn_layer_norm."),
    (r"(decoder\.layers\.\d+)\.norm2\.", r"\1.encoder_attn_layer_norm."),
    (r"(decoder\.layers\.\d+)\.norm3\.", r"\1.final_layer_norm."),
    (r"^class_embed\.", "class_labels_classifier."),
    (r"^bbox_embed\.", "bbox_predictor."),
]
_IN_PROJ = re.compile(r"^(.*_attn)\.in_proj_(weight|bias)$")
# COCO's detection categories by id (1-90; the ids without a category, and 0, are "N/A"), the classes of the official
# COCO checkpoints (91 classes + "no object").
COCO_CATEGORIES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck", 9: "boat",
    10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird", 17: "cat",
    18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe",
    27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove", 41: "skateboard",
    42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup", 48: "fork", 49: "knife",
    50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot",
    58: "hot dog", 59: "pizza", 60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard",
    77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book",
    85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}
# ResNet depth from the number of blocks in layer3 and whether blocks have a third convolution (bottleneck).
_RESNETS = {(2, False): "resnet18", (6, False): "resnet34", (6, True): "resnet50", (23, True): "resnet101"}


def convert_official_detr_state_dict(state_dict: dict) -> dict:
    """Rename a facebookresearch/detr state dict to ours and split each fused `in_proj` into q/k/v projections."""
    converted = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, replacement in _DETR_RENAMES:
            key = re.sub(pattern, replacement, key)
        match = _IN_PROJ.match(key)
        if match:
            prefix, kind = match.groups()
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                converted[f"{prefix}.{name}.{kind}"] = part
        else:
            converted[key] = value
    return converted


def official_detr_config(state_dict: dict, args=None, **overrides) -> DetrConfig:
    """A [`DetrConfig`] for an official DETR state dict: sizes from the tensors, the rest from the run's `args`
    (``hidden_dim``, ``nheads``, ``backbone``, ``dilation``, loss weights...) or the paper's defaults."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "class_embed.weight" not in state_dict:
        raise ValueError("not a facebookresearch/detr detection state dict: no 'class_embed.weight'")
    saved = _settings(args)
    body = "backbone.0.body."
    depth = (_count(state_dict, rf"{re.escape(body)}layer3\.(\d+)\."), f"{body}layer1.0.conv3.weight" in state_dict)
    num_labels = state_dict["class_embed.weight"].shape[0] - 1
    fields = dict(
        # The COCO checkpoints' 91 classes get COCO's names; other class counts keep transformers' LABEL_<i>.
        **({"id2label": {i: COCO_CATEGORIES.get(i, "N/A") for i in range(91)}} if num_labels == 91 else
           {"num_labels": num_labels}),
        d_model=state_dict["query_embed.weight"].shape[1],
        num_queries=state_dict["query_embed.weight"].shape[0],
        encoder_layers=_count(state_dict, r"transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=_count(state_dict, r"transformer\.decoder\.layers\.(\d+)\."),
        encoder_ffn_dim=state_dict["transformer.decoder.layers.0.linear1.weight"].shape[0],
        decoder_ffn_dim=state_dict["transformer.decoder.layers.0.linear1.weight"].shape[0],
        pre_norm="transformer.encoder.norm.weight" in state_dict,
        position_embedding_type="learned" if "backbone.1.row_embed.weight" in state_dict else "sine",
        backbone=saved.get("backbone", _RESNETS.get(depth, "resnet50")),
        encoder_attention_heads=saved.get("nheads", 8),
        decoder_attention_heads=saved.get("nheads", 8),
        dilation=bool(saved.get("dilation", False)),
        auxiliary_loss=bool(saved.get("aux_loss", True)),
        decoder_chained_norm=False,  # the official decoder normalizes a copy for the heads only
    )
    for ours, theirs in (("class_cost", "set_cost_class"), ("bbox_cost", "set_cost_bbox"),
                         ("giou_cost", "set_cost_giou"), ("bbox_loss_coefficient", "bbox_loss_coef"),
                         ("giou_loss_coefficient", "giou_loss_coef"), ("eos_coefficient", "eos_coef")):
        if theirs in saved:
            fields[ours] = saved[theirs]
    if "dropout" in saved:
        fields.update(dropout=saved["dropout"], attention_dropout=saved["dropout"],
                      activation_dropout=saved["dropout"])
    if "id2label" in overrides:
        fields.pop("num_labels", None)
    fields.update(overrides)
    return DetrConfig(**fields)


def convert_official_detr(checkpoint: dict, **config_overrides) -> DetrForObjectDetection:
    """Build detrvilt's `DetrForObjectDetection` (eval mode) from a facebookresearch/detr checkpoint.

    Args:
        checkpoint: what `load_official_checkpoint` returns for a ``detr-r50-e632da11.pth``-style file
            (``{"model": state_dict, "args": ...}``), or a bare state dict.
        config_overrides: [`DetrConfig`] fields that replace the inferred ones (e.g. `id2label`).
    """
    state_dict = checkpoint.get("model", checkpoint)
    config = official_detr_config(state_dict, checkpoint.get("args"), **config_overrides)
    model = DetrForObjectDetection(config)
    load_converted_weights(model, convert_official_detr_state_dict(state_dict), "facebookresearch/detr")
    return model.eval()


# ----------------------------------------------------------------------------------------------------------- ViLT

_VILT_RENAMES = [
    (r"^text_embeddings\.LayerNorm\.", "vilt.embeddings.text_embeddings.layer_norm."),
    (r"^text_embeddings\.", "vilt.embeddings.text_embeddings."),
    (r"^token_type_embeddings\.", "vilt.embeddings.modality_type_embeddings."),
    (r"^transformer\.cls_token$", "vilt.embeddings.cls_token"),
    (r"^transformer\.pos_embed$", "vilt.embeddings.position_embeddings"),
    (r"^transformer\.patch_embed\.proj\.", "vilt.embeddings.patch_projection."),
    (r"^transformer\.blocks\.", "vilt.encoder.layers."),
    (r"^transformer\.norm\.", "vilt.layernorm."),
    (r"^pooler\.", "vilt.pooler."),
    (r"^(?:vqa|nlvr2)_classifier\.", "classifier."),
    (r"^itm_score\.fc\.", "itm_score."),
    (r"^mlm_score\.transform\.LayerNorm\.", "mlm_score.transform.layer_norm."),
    (r"^mlm_score\.bias$", "mlm_score.decoder.bias"),
]
# Not parameters of any of our classes: BERT's buffers, timm's unused classifier, the masked-patch head of the
# paper's ablation.
_VILT_DROPPED = re.compile(r"(position_ids|token_type_ids)$|^transformer\.head\.|^mpp_score\.")


def convert_official_vilt_state_dict(state_dict: dict) -> dict:
    """Rename a dandelin/ViLT state dict to ours (the fused `qkv` layout is the same)."""
    converted = {}
    for key, value in state_dict.items():
        if _VILT_DROPPED.search(key):
            continue
        for pattern, replacement in _VILT_RENAMES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


def _official_vilt_class(state_dict: dict):
    if "vqa_classifier.0.weight" in state_dict:
        return ViltForQuestionAnswering
    if "nlvr2_classifier.0.weight" in state_dict:
        return ViltForImagesAndTextClassification
    if "rank_output.weight" in state_dict:
        return ViltForImageAndTextRetrieval
    if "mlm_score.decoder.weight" in state_dict or "itm_score.fc.weight" in state_dict:
        return ViltForPreTraining
    return ViltModel


def official_vilt_config(state_dict: dict, hparams=None, **overrides) -> ViltConfig:
    """A [`ViltConfig`] for an official ViLT state dict: sizes from the tensors, heads and `max_image_length` from
    the Lightning `hparams` (``{"config": {...}}``) or ViLT-B/32's values."""
    if "transformer.patch_embed.proj.weight" not in state_dict:
        raise ValueError("not a dandelin/ViLT state dict: no 'transformer.patch_embed.proj.weight'")
    saved = _settings(_settings(hparams).get("config"))
    patch_weight = state_dict["transformer.patch_embed.proj.weight"]  # (hidden, 3, patch, patch)
    hidden, patch = patch_weight.shape[0], patch_weight.shape[-1]
    grid = round((state_dict["transformer.pos_embed"].shape[1] - 1) ** 0.5)
    fields = dict(
        vocab_size=state_dict["text_embeddings.word_embeddings.weight"].shape[0],
        max_position_embeddings=state_dict["text_embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state_dict["text_embeddings.token_type_embeddings.weight"].shape[0],
        modality_type_vocab_size=state_dict["token_type_embeddings.weight"].shape[0],
        hidden_size=hidden,
        num_hidden_layers=_count(state_dict, r"transformer\.blocks\.(\d+)\."),
        intermediate_size=state_dict["transformer.blocks.0.mlp.fc1.weight"].shape[0],
        num_attention_heads=saved.get("num_heads", 12),
        patch_size=patch,
        image_size=grid * patch,
        qkv_bias="transformer.blocks.0.attn.qkv.bias" in state_dict,
        max_image_length=saved.get("max_image_len", -1),
    )
    if "drop_rate" in saved:
        fields.update(hidden_dropout_prob=saved["drop_rate"], attention_probs_dropout_prob=saved["drop_rate"])
    model_class = _official_vilt_class(state_dict)
    if model_class is ViltForImagesAndTextClassification:
        fields.update(num_images=2, num_labels=2)
    elif model_class is ViltForQuestionAnswering:
        fields["num_labels"] = state_dict["vqa_classifier.3.weight"].shape[0]
    if "id2label" in overrides:
        fields.pop("num_labels", None)
    fields.update(overrides)
    return ViltConfig(**fields)


def convert_official_vilt(checkpoint: dict, **config_overrides):
    """Build the matching detrvilt ViLT model (eval mode) from a dandelin/ViLT Lightning checkpoint.

    | checkpoint holds | detrvilt class |
    | --- | --- |
    | `vqa_classifier` | `ViltForQuestionAnswering` |
    | `nlvr2_classifier` | `ViltForImagesAndTextClassification` (two images) |
    | `rank_output` | `ViltForImageAndTextRetrieval` (the `itm_score` it was started from is not kept) |
    | `mlm_score` / `itm_score` | `ViltForPreTraining` (both heads kept) |
    | none of these | `ViltModel` |

    Args:
        checkpoint: what `load_official_checkpoint` returns for a ``vilt_200k_mlm_itm.ckpt``-style file
            (``{"state_dict": ..., "hyper_parameters": ...}``), or a bare state dict.
        config_overrides: [`ViltConfig`] fields that replace the inferred ones (e.g. the VQA `id2label`).
    """
    state_dict = checkpoint.get("state_dict", checkpoint)
    config = official_vilt_config(state_dict, checkpoint.get("hyper_parameters"), **config_overrides)
    model_class = _official_vilt_class(state_dict)
    model = model_class(config)
    converted = convert_official_vilt_state_dict(state_dict)
    keep = set(model.state_dict())
    if model_class is ViltModel:
        converted = {k.removeprefix("vilt."): v for k, v in converted.items() if k.startswith("vilt.")}
    elif model_class is not ViltForPreTraining:
        # Task checkpoints may carry the pretraining heads they were started from; the task class has no use for them.
        converted = {k: v for k, v in converted.items() if k in keep or not k.startswith(("itm_score.", "mlm_score."))}
    allowed_missing = ()
    if model_class is ViltForPreTraining:
        # A checkpoint trained without one of the two objectives leaves that head freshly initialised.
        absent = [head for head in ("itm_score.", "mlm_score.") if not any(k.startswith(head) for k in converted)]
        allowed_missing = [k for k in keep if k.startswith(tuple(absent))] if absent else ()
    load_converted_weights(model, converted, "dandelin/ViLT", allowed_missing)
    return model.eval()


__all__ = [
    "COCO_CATEGORIES",
    "convert_official_detr",
    "convert_official_detr_state_dict",
    "convert_official_vilt",
    "convert_official_vilt_state_dict",
    "load_official_checkpoint",
    "official_detr_config",
    "official_vilt_config",
]
