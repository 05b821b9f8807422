"""ViLT's transformer from a timm ViT: the ImageNet ViT-B/32 (`vit_base_patch32_384`) initialisation of the paper.

The official model *is* a timm ViT whose blocks run over [text; image]: the patch projection, the image [CLS],
the position table, the blocks and the final norm come from the ViT; the text embeddings, the modality types,
the pooler and the heads start from scratch. Inside the blocks our parameter names are timm's, so the state dict
converts by renaming. A position table made for another grid (e.g. a 224-pixel ViT) is resampled with timm's
``resample_abs_pos_embed``.
"""

import re

import torch

_RENAMES = [
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "embeddings.patch_projection."),
    (r"^blocks\.(\d+)\.", r"encoder.layers.\1."),
    (r"^norm\.", "layernorm."),
]
# Parts of a timm ViT that ViLT does not use: the ImageNet classifier and its (identity for ViT-B) norms.
_DROPPED = re.compile(r"^(head|fc_norm|head_drop)\.")


def convert_timm_vit_state_dict(state_dict: dict, grid_size: int | None = None) -> dict:
    """Rename a timm `VisionTransformer` state dict to [`ViltModel`]'s names (tensors are shared, not copied).

    Args:
        state_dict (`dict[str, torch.Tensor]`): `timm.create_model("vit_base_patch32_384").state_dict()` or
            another timm ViT with one class token and absolute positions.
        grid_size (`int`, *optional*): side of our position table (`image_size // patch_size`); a table for
            another grid is resampled to it.

    Returns:
        `dict[str, torch.Tensor]` with keys `embeddings.{cls_token, position_embeddings, patch_projection.*}`,
        `encoder.layers.{i}.*` and `layernorm.*`.
    """
    converted = {}
    for key, value in state_dict.items():
        if _DROPPED.match(key):
            continue
        new_key = key
        for pattern, replacement in _RENAMES:
            new_key = re.sub(pattern, replacement, new_key)
        if new_key == key:
            raise ValueError(
                f"timm ViT parameter {key!r} has no counterpart in ViLT (only ViTs with one class token, absolute "
                "positions and plain pre-norm blocks convert)"
            )
        converted[new_key] = value
    positions = converted.get("embeddings.position_embeddings")
    if positions is not None and grid_size is not None:
        old_grid = int(round((positions.shape[1] - 1) ** 0.5))
        if old_grid * old_grid + 1 != positions.shape[1]:
            raise ValueError(
                f"timm pos_embed must hold 1 + a square number of positions, got shape {tuple(positions.shape)}"
            )
        if old_grid != grid_size:
            from timm.layers import resample_abs_pos_embed

            converted["embeddings.position_embeddings"] = resample_abs_pos_embed(
                positions, [grid_size, grid_size], [old_grid, old_grid], num_prefix_tokens=1
            )
    return converted


@torch.no_grad()
def load_timm_vit_weights(model, vit) -> list[str]:
    """Copy a timm ViT's weights into a ViLT model's transformer and patch embedding.

    Args:
        model: a [`ViltModel`] or any ViLT model with a `vilt` attribute.
        vit: a timm `VisionTransformer` or its state dict.

    Returns:
        `list[str]`: our parameters the ViT did not provide (text embeddings, modality types, pooler), which keep
        their initialisation.
    """
    base = getattr(model, "vilt", model)
    state_dict = vit.state_dict() if isinstance(vit, torch.nn.Module) else vit
    converted = convert_timm_vit_state_dict(state_dict, base.config.position_grid_size)
    ours = base.state_dict()
    for key, value in converted.items():
        if key not in ours:
            raise ValueError(f"timm ViT parameter maps to {key!r}, which this ViLT model does not have")
        if ours[key].shape != value.shape:
            raise ValueError(
                f"timm ViT parameter for {key!r} has shape {tuple(value.shape)}, this ViLT model expects "
                f"{tuple(ours[key].shape)} (hidden_size, num_hidden_layers or patch_size differ)"
            )
    missing_blocks = [key for key in ours if key.startswith("encoder.") and key not in converted]
    if missing_blocks:
        raise ValueError(f"the timm ViT has fewer blocks than num_hidden_layers: no weights for {missing_blocks[:4]}")
    base.load_state_dict(converted, strict=False)
    return sorted(key for key in ours if key not in converted)


def load_pretrained_vit(model, name: str) -> None:
    """Create timm's pretrained `name` (ImageNet weights, from the local cache or the Hub) and load it."""
    import timm

    try:
        vit = timm.create_model(name, pretrained=True)
    except (RuntimeError, OSError) as error:  # timm raises OSError when the weights are neither cached nor reachable
        raise RuntimeError(
            f"could not load timm's pretrained weights for vit={name!r} (no local copy and no connection?); build "
            "with use_pretrained_vit=False to start from random weights"
        ) from error
    load_timm_vit_weights(model, vit)
