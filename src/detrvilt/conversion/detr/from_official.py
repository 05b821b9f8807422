"""facebookresearch/detr ``.pth`` checkpoints into detrvilt's DETR.

Key layout (facts of the official code): ``{"model": state_dict, "args": argparse.Namespace, ...}``. The backbone is
torchvision's ResNet under ``backbone.0.body.`` (same layer names as timm's), learned positions under
``backbone.1.{row,col}_embed``, the transformer under ``transformer.{encoder,decoder}.layers.N.`` with
``nn.MultiheadAttention``'s fused ``in_proj_weight`` / ``in_proj_bias`` (query, key, value stacked), ``linear1`` /
``linear2`` and ``norm1..3``, ``transformer.decoder.norm`` (and ``transformer.encoder.norm`` with ``--pre_norm``),
then ``input_proj``, ``query_embed``, ``class_embed`` and ``bbox_embed.layers.{0,1,2}``.
"""

from __future__ import annotations

import re

from ...modeling.detr import DetrConfig, DetrForObjectDetection
from ..common import load_converted_weights
from ..official import count_indexed, saved_settings

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
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
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
    saved = saved_settings(args)
    body = "backbone.0.body."
    depth = (count_indexed(state_dict, rf"{re.escape(body)}layer3\.(\d+)\."),
             f"{body}layer1.0.conv3.weight" in state_dict)
    num_labels = state_dict["class_embed.weight"].shape[0] - 1
    fields = dict(
        # The COCO checkpoints' 91 classes get COCO's names; other class counts keep transformers' LABEL_<i>.
        **({"id2label": {i: COCO_CATEGORIES.get(i, "N/A") for i in range(91)}} if num_labels == 91 else
           {"num_labels": num_labels}),
        d_model=state_dict["query_embed.weight"].shape[1],
        num_queries=state_dict["query_embed.weight"].shape[0],
        encoder_layers=count_indexed(state_dict, r"transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=count_indexed(state_dict, r"transformer\.decoder\.layers\.(\d+)\."),
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


__all__ = ["COCO_CATEGORIES", "convert_official_detr", "convert_official_detr_state_dict", "official_detr_config"]
