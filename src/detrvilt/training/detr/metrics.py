"""COCO box mAP from DETR's raw outputs: post-processing, references in original-image pixels, the metric call.

The same per-image records serve `Trainer`'s `compute_metrics` (one process, `eval_do_concat_batches=False`) and the
Accelerate loop (records gathered across processes and keyed by `image_id`, so every image counts exactly once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import box_convert

from ...evaluation import load_metric

# Label entries that are tensors and that evaluation needs; the rest (e.g. `dropped`, a dict of ints) stays behind.
EVAL_LABEL_KEYS = ("class_labels", "boxes", "image_id", "orig_size", "size", "area", "iscrowd")


def _tensor(value, dtype=None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value, dtype=dtype)


def eval_labels(labels: Sequence[Mapping]) -> list[dict]:
    """Labels reduced to the tensors evaluation needs (what `Trainer` can detach, move and numpify)."""
    return [{key: label[key] for key in EVAL_LABEL_KEYS if key in label} for label in labels]


def pack_labels(labels: Sequence[Mapping]) -> dict[str, torch.Tensor]:
    """A batch's label dicts as batch-first tensors, objects padded to the batch's largest count (class id -1).

    `Trainer` and `accelerate`'s `gather_for_metrics` cut the last batch along the first dimension of every tensor;
    in this layout that dimension is the image, as they assume (in a list of dicts it would be the objects).
    Returns `class_labels` `(B, M)`, `boxes` `(B, M, 4)`, `area` `(B, M)`, `iscrowd` `(B, M)`, `orig_size` and `size`
    `(B, 2)`, `image_id` `(B,)`.
    """
    count = max((len(label["class_labels"]) for label in labels), default=0)
    batch = len(labels)
    packed = {
        "class_labels": torch.full((batch, count), -1, dtype=torch.int64),
        "boxes": torch.zeros(batch, count, 4),
        "area": torch.zeros(batch, count),
        "iscrowd": torch.zeros(batch, count, dtype=torch.int64),
        "orig_size": torch.zeros(batch, 2, dtype=torch.int64),
        "size": torch.zeros(batch, 2, dtype=torch.int64),
        "image_id": torch.full((batch,), -1, dtype=torch.int64),
    }
    for i, label in enumerate(labels):
        n = len(label["class_labels"])
        packed["class_labels"][i, :n] = _tensor(label["class_labels"]).cpu()
        packed["boxes"][i, :n] = _tensor(label["boxes"], torch.float32).reshape(-1, 4).cpu()
        for key in ("area", "iscrowd"):
            if key in label:
                packed[key][i, :n] = _tensor(label[key]).cpu()
        packed["orig_size"][i] = _tensor(label["orig_size"]).cpu()
        packed["size"][i] = _tensor(label.get("size", label["orig_size"])).cpu()
        if "image_id" in label:
            packed["image_id"][i] = _tensor(label["image_id"]).reshape(-1)[0]
    return packed


def unpack_labels(packed: Mapping) -> list[dict]:
    """The inverse of [`pack_labels`] (tensors or numpy arrays in): one label dict per image."""
    classes = _tensor(packed["class_labels"], torch.int64)
    labels = []
    for i in range(classes.shape[0]):
        keep = classes[i] >= 0
        labels.append({
            "class_labels": classes[i][keep],
            "boxes": _tensor(packed["boxes"][i], torch.float32)[keep],
            "area": _tensor(packed["area"][i], torch.float32)[keep],
            "iscrowd": _tensor(packed["iscrowd"][i], torch.int64)[keep],
            "orig_size": _tensor(packed["orig_size"][i], torch.int64),
            "size": _tensor(packed["size"][i], torch.int64),
            "image_id": _tensor(packed["image_id"][i], torch.int64),
        })
    return labels


def reference_from_label(label: Mapping) -> dict:
    """One image's ground truth for `coco_map`: `boxes` absolute xyxy in the original image, `labels`, `iscrowd` and
    `area` (original pixels).

    Args:
        label: the processor's label: `boxes` `(n, 4)` normalized cxcywh of the unpadded image, `class_labels`
            `(n,)`, `orig_size` `[height, width]`, optionally `size` (the resized image) and `area` (in resized pixels).
    """
    if "orig_size" not in label:
        raise ValueError(f"labels need 'orig_size' ([height, width] of the original image), got keys {sorted(label)}")
    height, width = (float(v) for v in _tensor(label["orig_size"]).tolist())
    boxes = _tensor(label["boxes"], torch.float32).reshape(-1, 4)
    boxes = box_convert(boxes, "cxcywh", "xyxy") * torch.tensor([width, height, width, height])
    reference = {"boxes": boxes.tolist(), "labels": _tensor(label["class_labels"], torch.int64).tolist()}
    reference["iscrowd"] = _tensor(label["iscrowd"], torch.int64).tolist() if "iscrowd" in label else []
    if "area" in label and "size" in label:
        size_h, size_w = (float(v) for v in _tensor(label["size"]).tolist())
        scale = height * width / (size_h * size_w)
        reference["area"] = (_tensor(label["area"], torch.float64) * scale).tolist()
    else:
        reference["area"] = []
    return reference


def detection_records(image_processor, logits, pred_boxes, labels: Sequence[Mapping], threshold: float = 0.0,
                      top_k: int | None = None) -> list[dict]:
    """Per-image `{"image_id", "prediction", "reference"}` from one batch of raw outputs, in original-image pixels.

    Args:
        image_processor: supplies `post_process_object_detection`.
        logits (`(B, Q, C+1)`), pred_boxes (`(B, Q, 4)` normalized cxcywh): tensors or arrays.
        labels: the batch's labels (see [`reference_from_label`]); `image_id` identifies the image.
        threshold (`float`): score threshold. COCO mAP wants every detection (0.0), ranked by score.
    """
    logits, pred_boxes = _tensor(logits, torch.float32), _tensor(pred_boxes, torch.float32)
    if len(labels) != logits.shape[0]:
        raise ValueError(f"got {len(labels)} labels for a batch of {logits.shape[0]} predictions")
    sizes = [[int(v) for v in _tensor(label["orig_size"]).tolist()] for label in labels]
    detections = image_processor.post_process_object_detection(
        {"logits": logits, "pred_boxes": pred_boxes}, threshold=threshold, target_sizes=sizes, top_k=top_k)
    records = []
    for position, (detection, label) in enumerate(zip(detections, labels, strict=True)):
        image_id = int(_tensor(label["image_id"]).reshape(-1)[0]) if "image_id" in label else position
        records.append({
            "image_id": image_id,
            "prediction": {key: detection[key].tolist() for key in ("boxes", "scores", "labels")},
            "reference": reference_from_label(label),
        })
    return records


def coco_map_from_records(records: Sequence[Mapping], per_class: bool = False, deduplicate: bool = False,
                          prefix: str = "") -> dict[str, float]:
    """COCO mAP over per-image records.

    Args:
        records: from [`detection_records`].
        deduplicate (`bool`): keep one record per `image_id` and sort by it (for records gathered across processes,
            where a distributed sampler repeats images to even out the last batch). Needs unique ids >= 0.

    Returns the metric's numbers (`map`, `map_50`, ...) as floats, names prefixed by `prefix`, plus `num_images`.
    """
    if not records:
        raise ValueError("no image to evaluate")
    ordered = list(records)
    if deduplicate:
        if any(int(r["image_id"]) < 0 for r in ordered):
            raise ValueError("deduplicate=True needs an image_id >= 0 for every image (the dataset has no image_id?)")
        unique = {}
        for record in ordered:
            unique.setdefault(int(record["image_id"]), record)
        ordered = [unique[key] for key in sorted(unique)]
    metric = load_metric("coco_map")
    result = metric.compute(predictions=[r["prediction"] for r in ordered],
                            references=[r["reference"] for r in ordered], per_class=per_class)
    scores = {f"{prefix}{k}": (float(v) if np.isscalar(v) else v) for k, v in result.items()}
    scores[f"{prefix}num_images"] = len(ordered)
    return scores


class DetrCocoMetrics:
    """`compute_metrics` for [`DetrTrainer`] (with `eval_do_concat_batches=False`, which it requires).

    ``DetrTrainer(..., compute_metrics=DetrCocoMetrics(image_processor))``: receives, per evaluation batch, the
    predictions `(logits, pred_boxes)` and the labels packed by [`pack_labels`] (what `DetrTrainer.prediction_step`
    returns), and returns COCO mAP (`map`, `map_50`, `map_75`, `map_small`, ..., `mar_100`) and `num_images`.
    """

    def __init__(self, image_processor, threshold: float = 0.0, top_k: int | None = None, per_class: bool = False):
        self.image_processor = image_processor
        self.threshold = threshold
        self.top_k = top_k
        self.per_class = per_class

    def __call__(self, eval_prediction) -> dict[str, float]:
        predictions, label_batches = eval_prediction.predictions, eval_prediction.label_ids
        if not isinstance(label_batches, list) or (label_batches and not isinstance(label_batches[0], Mapping)):
            raise ValueError("DetrCocoMetrics needs the evaluation batches unconcatenated, with packed labels: use "
                             "DetrTrainer with TrainingArguments(eval_do_concat_batches=False)")
        records = []
        for batch_predictions, batch_labels in zip(predictions, label_batches, strict=True):
            logits, pred_boxes = batch_predictions[0], batch_predictions[1]
            records += detection_records(self.image_processor, logits, pred_boxes, unpack_labels(batch_labels),
                                         self.threshold, self.top_k)
        scores = coco_map_from_records(records, per_class=self.per_class)
        return {k: v for k, v in scores.items() if np.isscalar(v)}


def detr_eval_step(image_processor, threshold: float = 0.0, top_k: int | None = None) -> Callable:
    """An `eval_step` for DETR: per-image records (`image_id`, post-processed prediction, reference) in
    original-image pixels, see [`detection_records`]."""

    def step(model, batch):
        outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch.get("pixel_mask"))
        labels = [{k: v.cpu() for k, v in label.items()} for label in eval_labels(batch["labels"])]
        return detection_records(image_processor, outputs["logits"].float().cpu(), outputs["pred_boxes"].float().cpu(),
                                 labels, threshold, top_k)

    return step


def detr_layers_eval_step(image_processor, threshold: float = 0.0, top_k: int | None = None) -> Callable:
    """An `eval_step` that scores the output of every decoder layer through the shared heads (the paper's Fig. 4: AP
    after each layer): per image `{"image_id", "reference", "layer_predictions"}`, one post-processed prediction
    per decoder layer (first layer first), in original-image pixels. Use [`coco_map_by_layer`] on the records."""

    def step(model, batch):
        outputs = model.model(pixel_values=batch["pixel_values"], pixel_mask=batch.get("pixel_mask"),
                              return_dict=True)
        all_logits, all_boxes = model.predict(outputs, all_layers=True)  # (L, B, Q, C+1), (L, B, Q, 4)
        labels = [{k: v.cpu() for k, v in label.items()} for label in eval_labels(batch["labels"])]
        per_layer = [detection_records(image_processor, logits.float().cpu(), boxes.float().cpu(), labels, threshold,
                                       top_k) for logits, boxes in zip(all_logits, all_boxes, strict=True)]
        return [{"image_id": records[0]["image_id"], "reference": records[0]["reference"],
                 "layer_predictions": [record["prediction"] for record in records]}
                for records in zip(*per_layer, strict=True)]

    return step


def coco_map_by_layer(records: Sequence[Mapping], deduplicate: bool = False) -> list[dict[str, float]]:
    """COCO mAP of each decoder layer from [`detr_layers_eval_step`]'s records: a list with one
    [`coco_map_from_records`] result per layer, the first decoder layer first."""
    if not records:
        raise ValueError("no image to evaluate")
    num_layers = len(records[0]["layer_predictions"])
    return [
        coco_map_from_records([{"image_id": r["image_id"], "reference": r["reference"],
                                "prediction": r["layer_predictions"][layer]} for r in records], deduplicate=deduplicate)
        for layer in range(num_layers)
    ]
