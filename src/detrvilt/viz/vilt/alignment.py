"""Pictures of a ViLT: word-patch alignment (the IPOT transport plan of each word over the image patches) and the
text [CLS] attention over the patches.

Kim et al., 2021, "ViLT", section 3.2 and figure 4: the word-patch alignment objective computes an optimal-transport
plan between the text tokens and the image patches of the last layer's output; drawing each word's row of the plan
over the patch grid shows which patches the word is aligned with. The plan is computed by the model's own
``wpa_transport`` (``modeling/vilt/wpa_vilt.py``: cosine cost, IPOT with the config's beta and iteration counts,
the text [CLS], [SEP] and image [CLS] left out) on the `last_hidden_state` of one eval-mode forward pass, which
also returns the attention weights (`output_attentions=True`) from which the [CLS] map is read.

A word's map is its plan row over the valid patches, renormalized to sum to 1 (word pieces of one word are summed
first: BERT marks continuations with ``##``). The [CLS] map is the last layer's attention of the text [CLS] over the
patches (mean over heads, or one head), not renormalized: the rest of its attention goes to the text and the image
[CLS], and the picture reports the share that reaches the patches. Padding patches receive exactly zero in both.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import torch

from ...modeling.vilt.wpa_vilt import wpa_masks, wpa_transport
from ..common import (
    DEFAULT_DPI,
    DEFAULT_PANEL_INCHES,
    as_image_list,
    as_rgb_array,
    grid_shape,
    grid_to_image,
    head_mean,
    layer_name,
    new_figure,
    panel_aspect,
    pick_layer,
    save_figure,
    show_heat_map,
    valid_extent,
)


@dataclass
class WordPatchAlignment:
    """The alignment pictures' data for one image-caption pair.

    Args:
        image (`np.ndarray`): the image as given, `uint8` `(H0, W0, 3)`.
        words (`list[str]`): the caption's words (word pieces merged), in order.
        word_grids (`torch.FloatTensor` of shape `(num_words, GH, GW)`): each word's transport plan over the padded
            batch's patch grid, summing to 1 over the image's valid patches and zero on padding patches.
        cls_grid (`torch.FloatTensor` of shape `(GH, GW)`): text [CLS] attention weights over the patches.
        patch_mask (`torch.BoolTensor` of shape `(GH, GW)`): the image's valid patches.
        resized_size (`(int, int)`): `(h, w)` of the image as the model saw it. patch_size (`int`): pixels per patch.
        distance (`float`): the optimal-transport distance `sum(cost * plan)` of the pair.
        cls_source (`str`): which attention the [CLS] map reads, e.g. `"last layer, mean of heads"`.
        similarity_grids (`torch.FloatTensor` of shape `(num_words, GH, GW)`): each word's cosine similarity to each
            patch (`1 - cost` of the plan's cost; word pieces summed), zero on padding patches: the nearest patch
            without the transport's equal-mass constraint.
        attention_grids (`torch.FloatTensor` of shape `(num_words, GH, GW)`): each word's attention weights over
            the patches in the [CLS] map's layer and head(s) (word pieces summed), zero on padding patches.
    """

    image: np.ndarray
    words: list
    word_grids: torch.Tensor
    cls_grid: torch.Tensor
    patch_mask: torch.Tensor
    resized_size: tuple
    patch_size: int
    distance: float
    cls_source: str = "last layer, mean of heads"
    similarity_grids: torch.Tensor | None = None
    attention_grids: torch.Tensor | None = None

    def on_image(self, grid: torch.Tensor) -> np.ndarray:
        """A `(GH, GW)` map -> its valid patches spread over the original image, `(H0, W0)`."""
        rows, columns = valid_extent(self.patch_mask)
        return grid_to_image(grid[:rows, :columns], (self.patch_size, self.patch_size), self.resized_size,
                             self.image.shape[:2])


def vilt_backbone(model):
    """The `ViltModel` inside a ViLT task model (its `.vilt`), or `model` itself."""
    backbone = getattr(model, "vilt", model)
    if not hasattr(backbone, "embeddings") or not hasattr(backbone.config, "patch_size"):
        raise TypeError(f"model must be a detrvilt ViltModel or a model with a .vilt ViltModel, got "
                        f"{type(model).__name__}")
    return backbone


def _merge_word_pieces(tokens: list[str], rows: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Sum the rows of `##` continuation pieces into their word's row: `(n, ...)` -> `(num_words, ...)`."""
    words, merged = [], []
    for token, row in zip(tokens, rows, strict=True):
        if token.startswith("##") and words:
            words[-1] += token[2:]
            merged[-1] = merged[-1] + row
        else:
            words.append(token)
            merged.append(row)
    return words, torch.stack(merged)


@torch.no_grad()
def word_patch_alignment(model, processor, images, captions, layer: int = -1, head: int | None = None,
                         merge_word_pieces: bool = True) -> list[WordPatchAlignment]:
    """Word-patch alignment and [CLS] attention of image-caption pairs, from one eval-mode pass over the batch.

    Args:
        model: a detrvilt ViLT (`ViltModel`, or any model with a `.vilt` one: `ViltForPreTraining`,
            `ViltForQuestionAnswering`, ...). Its config's `ipot_beta`, `ipot_iterations`, `ipot_inner_iterations`
            set IPOT.
        processor: a `ViltProcessor` (tokenizer and image processor).
        images: one image or a list (PIL images, paths, `(H, W, 3)` arrays); captions: one string or a list, one per
            image. Several pairs are padded into one batch.
        layer (`int`), head (`int`, *optional*): the attention layer of the [CLS] map, and one head instead of the
            mean over heads.
        merge_word_pieces (`bool`): one map per word (pieces summed) instead of one per word piece.

    Returns:
        `list[WordPatchAlignment]`, one per pair.
    """
    arrays = [as_rgb_array(image, i) for i, image in enumerate(as_image_list(images))]
    captions = [captions] if isinstance(captions, str) else list(captions)
    if len(captions) != len(arrays):
        raise ValueError(f"captions must have one caption per image ({len(arrays)}), got {len(captions)}")
    vilt = vilt_backbone(model)
    config = vilt.config
    encoding = processor(images=arrays, text=captions, return_tensors="pt")
    if "pixel_mask" not in encoding:  # an unpadded single image: every pixel is real
        pixel_values = encoding["pixel_values"]
        encoding["pixel_mask"] = torch.ones(pixel_values.shape[0], *pixel_values.shape[-2:], dtype=torch.long)
    device = next(vilt.parameters()).device
    inputs = {k: encoding[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values",
                                                  "pixel_mask") if k in encoding}
    was_training = vilt.training
    vilt.eval()  # no patch sampling: every patch in grid order
    try:
        outputs = vilt(**inputs, output_attentions=True, return_dict=True)
    finally:
        vilt.train(was_training)
    text_length = inputs["input_ids"].shape[1]
    sequence = outputs.last_hidden_state  # (B, T + 1 + L, D)
    text_valid, image_valid = wpa_masks(inputs["attention_mask"], outputs.image_token_mask)
    cost, plan = wpa_transport(sequence[:, :text_length], sequence[:, text_length:], text_valid, image_valid,
                               getattr(config, "ipot_beta", 0.5), getattr(config, "ipot_iterations", 50),
                               getattr(config, "ipot_inner_iterations", 1))  # (B, T, 1 + L) each
    attention = pick_layer(outputs.attentions, layer, "attentions")  # (B, heads, S, S)

    patch_size = config.patch_size
    grid_h, grid_w = (s // patch_size for s in inputs["pixel_values"].shape[-2:])
    patch_index = outputs.patch_index.cpu()  # (B, L), positions in the (GH, GW) grid
    results = []
    for b in range(len(arrays)):
        def to_grid(values, index=patch_index[b]):  # (..., L) over image tokens -> (..., GH, GW), zero elsewhere
            grid = values.new_zeros(*values.shape[:-1], grid_h * grid_w)
            return grid.index_add(-1, index, values).unflatten(-1, (grid_h, grid_w))

        rows = plan[b, text_valid[b]][:, 1:].cpu()  # (n, L): valid text tokens over patches
        similarity = (1.0 - cost[b]).masked_fill(~image_valid[b][None, :], 0.0)[text_valid[b]][:, 1:].cpu()  # (n, L)
        text_positions = text_valid[b].nonzero().squeeze(1).cpu()
        word_attention = head_mean(attention[b][:, text_positions, text_length + 1:].cpu(), head)  # (n, L)
        tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][b][text_valid[b]].tolist())
        if merge_word_pieces:
            words, rows = _merge_word_pieces(tokens, rows)
            similarity, word_attention = (_merge_word_pieces(tokens, x)[1] for x in (similarity, word_attention))
        else:
            words = tokens
        rows = rows / rows.sum(-1, keepdim=True).clamp(min=torch.finfo(rows.dtype).tiny)
        cls_row = head_mean(attention[b, :, 0, text_length + 1:].cpu(), head)  # (L,) text [CLS] -> patches
        results.append(WordPatchAlignment(
            image=arrays[b],
            words=words,
            word_grids=to_grid(rows),
            cls_grid=to_grid(cls_row),
            patch_mask=to_grid(outputs.image_token_mask[b, 1:].float().cpu()) > 0,
            resized_size=valid_extent(inputs["pixel_mask"][b].cpu()),
            patch_size=patch_size,
            distance=float((cost[b] * plan[b]).sum()),
            cls_source=layer_name(layer, head),
            similarity_grids=to_grid(similarity),
            attention_grids=to_grid(word_attention),
        ))
    return results


def plot_word_patch_alignment(alignment: WordPatchAlignment, caption: str, path=None, max_words: int = 11,
                              columns: int = 4, panel_inches: float = DEFAULT_PANEL_INCHES, dpi: int = DEFAULT_DPI):
    """The image, the [CLS] attention over it, then one heat map per word (at most `max_words`)."""
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    words = alignment.words[:max_words]
    rows, columns = grid_shape(len(words) + 2, columns)
    figure, axes = new_figure(rows, columns, panel_inches, panel_aspect(alignment.image))
    axes = axes.flat
    axes[0].imshow(alignment.image)
    axes[0].set_title("\n".join(textwrap.wrap(caption, 28)[:2]), fontsize=7)
    show_heat_map(axes[1], alignment.image, alignment.on_image(alignment.cls_grid))
    share = float(alignment.cls_grid.sum())
    axes[1].set_title(f"text [CLS] attention, {share:.0%} on patches\n({alignment.cls_source})", fontsize=7)
    for k, word in enumerate(words):
        show_heat_map(axes[k + 2], alignment.image, alignment.on_image(alignment.word_grids[k]))
        axes[k + 2].set_title(f'"{word}"', fontsize=8)
    more = "" if len(words) == len(alignment.words) else f"; first {len(words)} of {len(alignment.words)} words"
    figure.suptitle(f"word-patch alignment (IPOT plan), OT distance {alignment.distance:.3f}{more}", fontsize=9)
    return save_figure(figure, path, dpi)


def draw_word_patch_alignment(model, processor, image, caption: str, path=None, layer: int = -1,
                              head: int | None = None, max_words: int = 11, columns: int = 4,
                              panel_inches: float = DEFAULT_PANEL_INCHES, dpi: int = DEFAULT_DPI):
    """Word-patch alignment and [CLS] attention of one image and caption (see [`word_patch_alignment`]).

    Returns:
        The figure, also written as a PNG to `path` when given.
    """
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string, got {caption!r}")
    alignment = word_patch_alignment(model, processor, [image], [caption], layer, head)[0]
    return plot_word_patch_alignment(alignment, caption, path, max_words, columns, panel_inches, dpi)
