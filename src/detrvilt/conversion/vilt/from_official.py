"""dandelin/ViLT ``.ckpt`` checkpoints (PyTorch Lightning) into detrvilt's ViLT classes.

Key layout (facts of the official code): ``{"state_dict": ..., "hyper_parameters": {"config": {...}}}``. BERT's
``text_embeddings.*``, the modality ``token_type_embeddings``, timm's ViT under ``transformer.`` (``cls_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``),
``pooler.dense``, and the heads ``mlm_score.*`` (decoder bias as ``mlm_score.bias``), ``itm_score.fc``,
``vqa_classifier.{0,1,3}``, ``nlvr2_classifier.{0,1,3}``, ``rank_output``. Our encoder keeps timm's fused ``qkv``,
so only names change. Unlike transformers' conversion, the ITM head of the MLM+ITM checkpoint is kept
([`ViltForPreTraining.itm_score`]).
"""

from __future__ import annotations

import re

from ...modeling import vilt
from ..common import load_converted_weights
from ..official import count_indexed, saved_settings

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
        return vilt.ViltForQuestionAnswering
    if "nlvr2_classifier.0.weight" in state_dict:
        return vilt.ViltForImagesAndTextClassification
    if "rank_output.weight" in state_dict:
        return vilt.ViltForImageAndTextRetrieval
    if "mlm_score.decoder.weight" in state_dict or "itm_score.fc.weight" in state_dict:
        return vilt.ViltForPreTraining
    return vilt.ViltModel


def official_vilt_config(state_dict: dict, hparams=None, **overrides) -> vilt.ViltConfig:
    """A [`ViltConfig`] for an official ViLT state dict: sizes from the tensors, heads and `max_image_length` from
    the Lightning `hparams` (``{"config": {...}}``) or ViLT-B/32's values."""
    if "transformer.patch_embed.proj.weight" not in state_dict:
        raise ValueError("not a dandelin/ViLT state dict: no 'transformer.patch_embed.proj.weight'")
    saved = saved_settings(saved_settings(hparams).get("config"))
    patch_weight = state_dict["transformer.patch_embed.proj.weight"]  # (hidden, 3, patch, patch)
    hidden, patch = patch_weight.shape[0], patch_weight.shape[-1]
    grid = round((state_dict["transformer.pos_embed"].shape[1] - 1) ** 0.5)
    fields = dict(
        vocab_size=state_dict["text_embeddings.word_embeddings.weight"].shape[0],
        max_position_embeddings=state_dict["text_embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state_dict["text_embeddings.token_type_embeddings.weight"].shape[0],
        modality_type_vocab_size=state_dict["token_type_embeddings.weight"].shape[0],
        hidden_size=hidden,
        num_hidden_layers=count_indexed(state_dict, r"transformer\.blocks\.(\d+)\."),
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
    if model_class is vilt.ViltForImagesAndTextClassification:
        fields.update(num_images=2, num_labels=2)
    elif model_class is vilt.ViltForQuestionAnswering:
        fields["num_labels"] = state_dict["vqa_classifier.3.weight"].shape[0]
    if "id2label" in overrides:
        fields.pop("num_labels", None)
    fields.update(overrides)
    return vilt.ViltConfig(**fields)


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
    if model_class is vilt.ViltModel:
        converted = {k.removeprefix("vilt."): v for k, v in converted.items() if k.startswith("vilt.")}
    elif model_class is not vilt.ViltForPreTraining:
        # Task checkpoints may carry the pretraining heads they were started from; the task class has no use for them.
        converted = {k: v for k, v in converted.items() if k in keep or not k.startswith(("itm_score.", "mlm_score."))}
    allowed_missing = ()
    if model_class is vilt.ViltForPreTraining:
        # A checkpoint trained without one of the two objectives leaves that head freshly initialised.
        absent = [head for head in ("itm_score.", "mlm_score.") if not any(k.startswith(head) for k in converted)]
        allowed_missing = [k for k in keep if k.startswith(tuple(absent))] if absent else ()
    load_converted_weights(model, converted, "dandelin/ViLT", allowed_missing)
    return model.eval()


__all__ = ["convert_official_vilt", "convert_official_vilt_state_dict", "official_vilt_config"]
