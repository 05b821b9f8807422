"""Where each DETR object query predicts boxes, over a data set (the DETR paper's figure 7).

Carion et al., 2020, section 4.2 and figure 7: every box a prediction slot outputs, on every image, drawn as a point
at its centre in the unit square (coordinates normalized by each image's size), coloured by the box: green for
small boxes, red for large wide ones, blue for large tall ones. Each slot learns to specialise in areas and box
sizes. The boxes are the model's own `pred_boxes` (normalized cx, cy, w, h relative to the unpadded image), with no
threshold by default as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..common import DEFAULT_DPI, as_rgb_array, grid_shape, new_figure, save_figure
from .pictures import run_detr

# A box whose side sqrt(w * h) reaches this fraction of the image counts as fully "large" in the colours.
LARGE_SIDE = 0.5


@torch.no_grad()
def query_box_predictions(model, processor, images: Iterable, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Every query's box and score on every image, in batches.

    Args:
        images: an iterable of images (PIL images, paths, `(H, W, 3)` arrays) or of dicts with an `"image"` entry
            (rows of a `datasets.Dataset`).
        batch_size (`int`): images per forward pass.

    Returns:
        `boxes` (`torch.FloatTensor` of shape `(num_images, num_queries, 4)`, normalized cx, cy, w, h) and `scores`
        (`(num_images, num_queries)`, the best class probability other than "no object").
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    boxes, scores, batch = [], [], []

    def flush():
        outputs = run_detr(model, processor, batch, output_attentions=False).outputs
        boxes.append(outputs.pred_boxes.float().cpu())
        scores.append(outputs.logits.float().softmax(-1)[..., :-1].max(-1).values.cpu())
        batch.clear()

    for i, image in enumerate(images):
        batch.append(as_rgb_array(image["image"] if isinstance(image, dict) else image, i))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not boxes:
        raise ValueError("images is empty: give at least one image")
    return torch.cat(boxes), torch.cat(scores)


def box_colours(sizes: torch.Tensor) -> np.ndarray:
    """RGB colours of `(n, 2)` normalized `(w, h)`: green small, red large and wide, blue large and tall (magenta
    large and square). Returns `(n, 3)` in [0, 1]."""
    w, h = sizes[:, 0].clamp(min=0), sizes[:, 1].clamp(min=0)
    large = ((w * h).sqrt() / LARGE_SIDE).clamp(max=1)  # 0 small .. 1 large
    wide = w / (w + h).clamp(min=1e-6)  # 1 wide, 0.5 square, 0 tall
    red = large * (2 * wide).clamp(max=1)
    blue = large * (2 * (1 - wide)).clamp(max=1)
    return torch.stack([red, 1 - large, blue], dim=1).numpy()


def plot_query_boxes(boxes: torch.Tensor, path=None, queries: Sequence[int] | None = None,
                     scores: torch.Tensor | None = None, threshold: float | None = None, columns: int = 5,
                     panel_inches: float = 1.8, dpi: int = DEFAULT_DPI):
    """One panel per query: the centres of its boxes over all images, in the unit square (y pointing down).

    Args:
        boxes (`torch.FloatTensor` of shape `(num_images, num_queries, 4)`): normalized cx, cy, w, h.
        queries (`list[int]`, *optional*): the queries to draw; the first 20 by default.
        scores (`(num_images, num_queries)`, *optional*) and threshold (`float`, *optional*): keep only boxes
            scoring above it (default: every box, as in the paper).

    Returns:
        The figure, also written to `path` when given.
    """
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (num_images, num_queries, 4) cxcywh, got shape {tuple(boxes.shape)}")
    num_queries = boxes.shape[1]
    queries = list(range(min(20, num_queries))) if queries is None else [int(q) for q in queries]
    if not queries or any(not 0 <= q < num_queries for q in queries):
        raise ValueError(f"queries must be a non-empty list of indices in [0, {num_queries}), got {queries}")
    if threshold is not None and scores is None:
        raise ValueError("threshold needs scores")
    rows, columns = grid_shape(len(queries), columns)
    figure, axes = new_figure(rows, columns, panel_inches)
    for axis, query in zip(axes.flat, queries, strict=False):
        chosen = boxes[:, query]  # (num_images, 4)
        if threshold is not None:
            chosen = chosen[scores[:, query] > threshold]
        axis.axis("on")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlim(0, 1)
        axis.set_ylim(1, 0)
        axis.set_aspect("equal")
        axis.scatter(chosen[:, 0].numpy(), chosen[:, 1].numpy(), c=box_colours(chosen[:, 2:]), s=4, linewidths=0)
        axis.set_title(f"query {query} ({len(chosen)})", fontsize=7)
    kept = "all boxes" if threshold is None else f"boxes scoring > {threshold}"
    figure.suptitle(f"box centres by query over {boxes.shape[0]} images ({kept}); green small, red wide, blue tall",
                    fontsize=8)
    return save_figure(figure, path, dpi)


def draw_query_box_distribution(model, processor, images: Iterable, path=None, queries: Sequence[int] | None = None,
                                threshold: float | None = None, batch_size: int = 8, columns: int = 5,
                                dpi: int = DEFAULT_DPI):
    """Run `model` over `images` and draw where each of `queries` puts its boxes (see [`plot_query_boxes`])."""
    boxes, scores = query_box_predictions(model, processor, images, batch_size)
    return plot_query_boxes(boxes, path, queries, scores, threshold, columns, dpi=dpi)
