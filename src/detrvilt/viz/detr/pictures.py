"""Pictures of a DETR: its detections, the encoder's self-attention at reference points and the decoder's
cross-attention of each detected object's query.

Carion et al., 2020, "End-to-End Object Detection with Transformers", figures 3 and 6: the last encoder layer's
self-attention around a few reference points already separates instances; the last decoder layer's attention of an
object's query falls on the object's extremities (heads, legs, edges). Both maps come from the model's own
`output_attentions=True` (the explicit softmax path of `DetrAttention`), averaged over heads as in the paper's
notebook (or one head). Nothing is recomputed here: a map is a row of `encoder_attentions[layer]` or
`cross_attentions[layer]`, reshaped to the `(H, W)` feature grid of `feature_mask`, cut to the image's valid cells
(padding lies bottom/right and receives exactly zero weight), and spread back over the original image.

Points and boxes are in pixels of the original image throughout: `(x, y)` reference points and absolute
`(x0, y0, x1, y1)` boxes, as `post_process_object_detection` returns them with `target_sizes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..common import (
    DEFAULT_DPI,
    DEFAULT_PANEL_INCHES,
    as_image_list,
    as_rgb_array,
    draw_box,
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

POINT_COLOURS = ("cyan", "lime", "magenta", "yellow", "orange", "white", "red", "deepskyblue")


@dataclass
class DetrInference:
    """One forward pass of a DETR over a padded batch, with what the pictures need to map grids back to pixels.

    Args:
        images (`list[np.ndarray]`): the images as given, `uint8` `(H0, W0, 3)`.
        outputs: the model's output with `logits`, `pred_boxes`, `feature_mask` and, when computed with attentions,
            `encoder_attentions` (`(B, heads, H*W, H*W)` per layer) and `cross_attentions` (`(B, heads, Q, H*W)`).
        pixel_mask (`torch.BoolTensor` of shape `(B, Hp, Wp)`): real pixels of the padded model input.
        feature_mask (`torch.BoolTensor` of shape `(B, H, W)`): valid cells of the feature grid.
    """

    images: list
    outputs: object
    pixel_mask: torch.Tensor
    feature_mask: torch.Tensor

    def original_size(self, index: int) -> tuple[int, int]:
        return tuple(self.images[index].shape[:2])

    def resized_size(self, index: int) -> tuple[int, int]:
        """`(h, w)` of the image as the model saw it, without padding."""
        return valid_extent(self.pixel_mask[index])

    def stride(self) -> tuple[float, float]:
        """Input pixels per feature cell, `(vertical, horizontal)` (the mask follows by nearest downsampling)."""
        return (self.pixel_mask.shape[1] / self.feature_mask.shape[1],
                self.pixel_mask.shape[2] / self.feature_mask.shape[2])

    def feature_cell(self, index: int, point: Sequence[float]) -> tuple[int, int]:
        """The valid feature cell `(row, column)` under an `(x, y)` point in original pixels."""
        height, width = self.original_size(index)
        x, y = _check_point(point, width, height)
        resized_h, resized_w = self.resized_size(index)
        stride_y, stride_x = self.stride()
        rows, columns = valid_extent(self.feature_mask[index])
        row = min(int(y * resized_h / height / stride_y), rows - 1)
        column = min(int(x * resized_w / width / stride_x), columns - 1)
        return row, column

    def on_image(self, index: int, grid: torch.Tensor) -> np.ndarray:
        """A `(H, W)` map over the full feature grid -> its valid cells spread over the original image `(H0, W0)`."""
        rows, columns = valid_extent(self.feature_mask[index])
        return grid_to_image(grid[:rows, :columns], self.stride(), self.resized_size(index),
                             self.original_size(index))


def _check_point(point, width: int, height: int) -> tuple[float, float]:
    if not isinstance(point, Sequence) or len(point) != 2:
        raise ValueError(f"points must be (x, y) pairs in original pixels, got {point!r}")
    x, y = float(point[0]), float(point[1])
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"point {(x, y)} lies outside the image of width {width} and height {height}")
    return x, y


@torch.no_grad()
def run_detr(model, processor, images, output_attentions: bool = True) -> DetrInference:
    """Preprocess `images` with `processor` (padded into one batch) and run `model` once in eval mode.

    Args:
        model: a detrvilt `DetrForObjectDetection` (anything returning `logits`, `pred_boxes` and `feature_mask`).
        processor: its image processor (resize, normalize, pad; returns `pixel_values` and `pixel_mask`).
        images: one image or a list (PIL images, file paths, `(H, W, 3)` arrays).
        output_attentions (`bool`): also compute every attention map (the explicit, slower attention path).
    """
    arrays = [as_rgb_array(image, i) for i, image in enumerate(as_image_list(images))]
    encoding = processor(images=arrays, return_tensors="pt")
    pixel_values, pixel_mask = encoding["pixel_values"], encoding.get("pixel_mask")
    if pixel_mask is None:
        pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[-2:], dtype=torch.long)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        outputs = model(pixel_values.to(device), pixel_mask=pixel_mask.to(device),
                        output_attentions=output_attentions, return_dict=True)
    finally:
        model.train(was_training)
    feature_mask = getattr(outputs, "feature_mask", None)
    if feature_mask is None:
        raise ValueError(f"{type(model).__name__} returned no feature_mask: use detrvilt's DetrForObjectDetection")
    return DetrInference(arrays, outputs, pixel_mask.bool().cpu(), feature_mask.bool().cpu())


def detect(inference: DetrInference, processor, threshold: float = 0.7, top_k: int | None = None) -> list[dict]:
    """Detections of every image, through the processor's own `post_process_object_detection`.

    Each query is post-processed on its own (a batch of single-query outputs), which keeps the query index of every
    detection: the decoder-attention pictures need it.

    Returns:
        `list[dict]`, one per image, by decreasing score: `scores` (`(k,)`), `labels` (`(k,)`), `boxes` (`(k, 4)`
        absolute x0, y0, x1, y1 in the original image) and `query_indices` (`torch.LongTensor` `(k,)`).
    """
    from ...modeling.detr.modeling_detr import DetrObjectDetectionOutput

    logits, pred_boxes = inference.outputs.logits.float().cpu(), inference.outputs.pred_boxes.float().cpu()
    batch_size, num_queries = logits.shape[:2]
    single = DetrObjectDetectionOutput(logits=logits.flatten(0, 1)[:, None],  # (B*Q, 1, C+1)
                                       pred_boxes=pred_boxes.flatten(0, 1)[:, None])  # (B*Q, 1, 4)
    sizes = [inference.original_size(i) for i in range(batch_size) for _ in range(num_queries)]
    per_query = processor.post_process_object_detection(single, threshold=-1.0, target_sizes=sizes)
    results = []
    for i in range(batch_size):
        rows = per_query[i * num_queries:(i + 1) * num_queries]
        scores = torch.cat([row["scores"] for row in rows])  # (Q,)
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[scores[order] > threshold][:top_k]
        results.append({
            "scores": scores[order],
            "labels": torch.cat([row["labels"] for row in rows])[order],
            "boxes": torch.cat([row["boxes"] for row in rows])[order],
            "query_indices": order,
        })
    return results


def encoder_attention_grid(inference: DetrInference, index: int, point: Sequence[float], layer: int = -1,
                           head: int | None = None) -> torch.Tensor:
    """Self-attention of the encoder cell under `point` over the whole feature grid.

    Args:
        index (`int`): the image in the batch. point (`(x, y)`): in original pixels. layer (`int`): encoder layer
        (the last by default). head (`int`, *optional*): one head instead of the mean over heads.

    Returns:
        `torch.FloatTensor` of shape `(H, W)` (the padded batch's feature grid): sums to 1, zero on padding cells.
    """
    weights = pick_layer(inference.outputs.encoder_attentions, layer, "encoder_attentions")  # (B, h, HW, HW)
    height, width = inference.feature_mask.shape[1:]
    row, column = inference.feature_cell(index, point)
    return head_mean(weights[index, :, row * width + column].cpu(), head).view(height, width)  # (H, W)


def decoder_attention_grid(inference: DetrInference, index: int, query_index: int, layer: int = -1,
                           head: int | None = None) -> torch.Tensor:
    """Cross-attention of object query `query_index` over the feature grid: `(H, W)`, sums to 1, zero on padding."""
    weights = pick_layer(inference.outputs.cross_attentions, layer, "cross_attentions")  # (B, h, Q, HW)
    if not 0 <= query_index < weights.shape[2]:
        raise ValueError(f"query_index must be in [0, {weights.shape[2]}), got {query_index}")
    height, width = inference.feature_mask.shape[1:]
    return head_mean(weights[index, :, query_index].cpu(), head).view(height, width)  # (H, W)


def _label_text(label: int, score: float | None, id2label: dict | None) -> str:
    name = (id2label or {}).get(int(label), str(int(label)))
    return name if score is None else f"{name} {score:.2f}"


def _colour(label: int):
    from matplotlib import colormaps

    return colormaps["tab10"](int(label) % 10)


def draw_detections(images, detections: Sequence[dict], path=None, id2label: dict | None = None,
                    references: Sequence[dict] | None = None, threshold: float | None = None, columns: int = 4,
                    panel_inches: float = DEFAULT_PANEL_INCHES, dpi: int = DEFAULT_DPI, title: str | None = None):
    """A grid of images with their detections (solid, labelled with class and score) and, optionally, ground truth
    (dashed white).

    Args:
        images: PIL images or `(H, W, 3)` arrays, in original pixels.
        detections (`list[dict]`): per image `boxes` (absolute xyxy), `scores`, `labels` (tensors or lists).
        references (`list[dict]`, *optional*): per image `boxes` (absolute xyxy) and `labels`.
        threshold (`float`, *optional*): draw only detections scoring above it.

    Returns:
        The `matplotlib.figure.Figure`, also written as a PNG to `path` when given.
    """
    images = [as_rgb_array(image, i) for i, image in enumerate(as_image_list(images))]
    if len(detections) != len(images) or (references is not None and len(references) != len(images)):
        raise ValueError(f"detections (and references) need one entry per image ({len(images)}), got "
                         f"{len(detections)} and {None if references is None else len(references)}")
    rows, columns = grid_shape(len(images), columns)
    figure, axes = new_figure(rows, columns, panel_inches)
    for i, (axis, image, detection) in enumerate(zip(axes.flat, images, detections, strict=False)):
        axis.imshow(image)
        for box in references[i]["boxes"] if references else ():
            draw_box(axis, box, "white", linestyle="--", linewidth=1.0)
        for box, score, label in zip(detection["boxes"], detection["scores"], detection["labels"], strict=True):
            if threshold is None or float(score) > threshold:
                draw_box(axis, box, _colour(label), _label_text(label, float(score), id2label))
    if title is None:
        title = "predictions" + ("" if threshold is None else f" (score > {threshold})")
        title += " and ground truth (dashed)" if references else ""
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path, dpi)


def predict(model, processor, images, threshold: float = 0.7, batch_size: int = 1) -> tuple[list, list[dict]]:
    """Detections of `images` ([`detect`]), `batch_size` images per forward pass.

    One image per pass by default, so that every image is seen exactly as in the attention pictures: in a padded
    batch, the feature-grid mask of a smaller image can count a cell lying mostly over padding as valid (the mask
    follows the padded size by nearest downsampling), which changes its predictions slightly.

    Returns:
        `(arrays, detections)`: the images as `uint8` `(H, W, 3)` arrays and one detection dict per image.
    """
    images = as_image_list(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    arrays, detections = [], []
    for start in range(0, len(images), batch_size):
        inference = run_detr(model, processor, images[start:start + batch_size], output_attentions=False)
        arrays += inference.images
        detections += detect(inference, processor, threshold)
    return arrays, detections


def draw_predictions(model, processor, images, path=None, threshold: float = 0.7, references=None, columns: int = 4,
                     panel_inches: float = DEFAULT_PANEL_INCHES, dpi: int = DEFAULT_DPI, batch_size: int = 1):
    """Run `model` on `images` and draw its detections above `threshold` (see [`predict`], [`draw_detections`])."""
    arrays, detections = predict(model, processor, images, threshold, batch_size)
    return draw_detections(arrays, detections, path, model.config.id2label, references, None, columns,
                           panel_inches, dpi, title=f"predictions (score > {threshold})"
                           + (" and ground truth (dashed)" if references else ""))


def draw_encoder_attention(model, processor, image, points: Sequence[Sequence[float]], path=None, layer: int = -1,
                           head: int | None = None, columns: int = 4, panel_inches: float = DEFAULT_PANEL_INCHES,
                           dpi: int = DEFAULT_DPI, inference: DetrInference | None = None):
    """The encoder's self-attention at reference points, over the image (the DETR paper's figure 3).

    Args:
        points: `(x, y)` reference points in pixels of the original `image`.
        layer (`int`): encoder layer (the last by default). head (`int`, *optional*): one head, else their mean.
        inference ([`DetrInference`], *optional*): a pass with attentions already run on `image` (first image).

    Returns:
        The figure: the image with the numbered points, then one panel per point with its attention map overlaid
        (valid region only), also written to `path` when given.
    """
    if not points:
        raise ValueError("points is empty: give at least one (x, y) reference point")
    inference = inference or run_detr(model, processor, [image])
    shown = inference.images[0]
    maps = [inference.on_image(0, encoder_attention_grid(inference, 0, p, layer, head)) for p in points]
    rows, columns = grid_shape(len(points) + 1, columns)
    figure, axes = new_figure(rows, columns, panel_inches, panel_aspect(shown))
    axes = axes.flat
    axes[0].imshow(shown)
    axes[0].set_title("reference points", fontsize=8)
    for k, (point, heat) in enumerate(zip(points, maps, strict=True)):
        colour = POINT_COLOURS[k % len(POINT_COLOURS)]
        axes[0].scatter([point[0]], [point[1]], s=30, c=colour, edgecolors="black", linewidths=0.5)
        axes[0].annotate(str(k + 1), (point[0], point[1]), color=colour, fontsize=8, xytext=(3, 3),
                         textcoords="offset points")
        show_heat_map(axes[k + 1], shown, heat)
        axes[k + 1].scatter([point[0]], [point[1]], s=30, c=colour, edgecolors="black", linewidths=0.5)
        axes[k + 1].set_title(f"point {k + 1} ({point[0]:.0f}, {point[1]:.0f})", fontsize=8)
    figure.suptitle(f"encoder self-attention ({layer_name(layer, head)})", fontsize=9)
    return save_figure(figure, path, dpi)


def draw_decoder_attention(model, processor, image, path=None, threshold: float = 0.7, max_objects: int = 6,
                           layer: int = -1, head: int | None = None, panel_inches: float = DEFAULT_PANEL_INCHES,
                           dpi: int = DEFAULT_DPI, inference: DetrInference | None = None):
    """For each detected object, its query's decoder cross-attention over the image above its box (figure 6).

    Args:
        threshold (`float`): objects scoring above it, at most `max_objects`, by decreasing score. When none does,
            the `max_objects` best-scoring queries are shown (and the title says so).
        layer (`int`): decoder layer (the last by default). head (`int`, *optional*): one head, else their mean.

    Returns:
        The figure, two rows by object (attention on top, box below), also written to `path` when given.
    """
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    inference = inference or run_detr(model, processor, [image])
    detection = detect(inference, processor, threshold, max_objects)[0]
    note = ""
    if len(detection["scores"]) == 0:
        detection = detect(inference, processor, -1.0, max_objects)[0]
        note = f" (none above {threshold}: the best-scoring queries)"
    shown = inference.images[0]
    count = len(detection["scores"])
    figure, axes = new_figure(2, count, panel_inches, panel_aspect(shown))
    for k in range(count):
        query, label = int(detection["query_indices"][k]), int(detection["labels"][k])
        heat = inference.on_image(0, decoder_attention_grid(inference, 0, query, layer, head))
        show_heat_map(axes[0, k], shown, heat)
        axes[0, k].set_title(f"query {query}", fontsize=8)
        axes[1, k].imshow(shown)
        draw_box(axes[1, k], detection["boxes"][k].tolist(), _colour(label),
                 _label_text(label, float(detection["scores"][k]), model.config.id2label))
    figure.suptitle(f"decoder cross-attention of each object's query ({layer_name(layer, head)}){note}", fontsize=9)
    return save_figure(figure, path, dpi)


def default_reference_points(detection: dict, image_size: tuple[int, int], count: int = 4) -> list[tuple]:
    """Centres of the first `count` detected boxes (clipped into the image), or a 2 x 2 grid without detections."""
    height, width = image_size
    points = []
    for box in detection["boxes"][:count].tolist():
        x = min(max((box[0] + box[2]) / 2, 0.0), width - 1.0)
        y = min(max((box[1] + box[3]) / 2, 0.0), height - 1.0)
        points.append((x, y))
    return points or [(width * fx, height * fy) for fy in (0.25, 0.75) for fx in (0.25, 0.75)]
