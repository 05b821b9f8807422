"""The DETR pictures of the demo in one call: predictions, encoder and decoder attention, object-query boxes."""

from __future__ import annotations

import os

from ..common import DEFAULT_DPI, as_image_list
from .pictures import (
    default_reference_points,
    draw_decoder_attention,
    draw_detections,
    draw_encoder_attention,
    predict,
    run_detr,
)
from .query_boxes import draw_query_box_distribution


def detr_demo_pictures(model, processor, images, output_dir: str, threshold: float = 0.5, references=None,
                       max_objects: int = 6, dpi: int = DEFAULT_DPI, query_box_images=None) -> list[str]:
    """The demo's DETR pictures, written to `output_dir`; returns their paths.

    - `detr_predictions.png`: detections above `threshold` on every image (ground truth dashed with `references`);
    - `detr_encoder_attention.png`: encoder self-attention of the image with the most detections (the first on
      ties) at the centres of its best detections (a 2 x 2 grid of points when it has none);
    - `detr_decoder_attention.png`: decoder cross-attention of the same image's detected objects;
    - `detr_query_boxes.png`: where each object query predicts boxes, over `query_box_images` (default `images`;
      the paper's figure uses a whole validation set).
    """
    images = as_image_list(images)
    paths = {name: os.path.join(output_dir, f"detr_{name}.png")
             for name in ("predictions", "encoder_attention", "decoder_attention", "query_boxes")}
    arrays, detections = predict(model, processor, images, threshold)
    draw_detections(arrays, detections, paths["predictions"], model.config.id2label, references, dpi=dpi,
                    title=f"predictions (score > {threshold})" + (" and ground truth (dashed)" if references else ""))
    counts = [len(detection["scores"]) for detection in detections]
    chosen = counts.index(max(counts))
    inference = run_detr(model, processor, [arrays[chosen]])
    points = default_reference_points(detections[chosen], inference.original_size(0))
    draw_encoder_attention(model, processor, None, points, paths["encoder_attention"], dpi=dpi, inference=inference)
    draw_decoder_attention(model, processor, None, paths["decoder_attention"], threshold, max_objects, dpi=dpi,
                           inference=inference)
    draw_query_box_distribution(model, processor, query_box_images if query_box_images is not None else images,
                                paths["query_boxes"], dpi=dpi)
    return list(paths.values())
