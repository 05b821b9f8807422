"""COCO box mAP as an `evaluate` metric, computed by pycocotools' `COCOeval` (so the numbers are pycocotools').

Inputs are in original-image pixel coordinates, boxes as absolute ``(x1, y1, x2, y2)``:

- ``predictions``: one dict per image, ``boxes`` ``(n, 4)``, ``scores`` ``(n,)``, ``labels`` ``(n,)``;
- ``references``: one dict per image, ``boxes`` ``(m, 4)``, ``labels`` ``(m,)``, and optionally ``iscrowd`` ``(m,)``
  and ``area`` ``(m,)`` (COCO's object areas, used for the small/medium/large split; the box area otherwise).

The result has the names torchmetrics uses: ``map``, ``map_50``, ``map_75``, ``map_small``, ``map_medium``,
``map_large``, ``mar_1``, ``mar_10``, ``mar_100``, ``mar_small``, ``mar_medium``, ``mar_large`` (pycocotools' twelve
``stats``, -1 where COCOeval has nothing to average), and with ``per_class=True`` also ``classes`` and
``map_per_class``.

This file is self-contained (no relative imports) so that ``evaluate.load("path/to/coco_map.py")`` works too.
"""

import contextlib
import io

import datasets
import evaluate
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

_STAT_NAMES = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large",
               "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]

_PREDICTION = {
    "boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4)),
    "scores": datasets.Sequence(datasets.Value("float64")),
    "labels": datasets.Sequence(datasets.Value("int64")),
}
# `iscrowd` and `area` are optional for the user; `_with_optional_fields` fills them (empty `area`: box areas).
_REFERENCE = {
    "boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4)),
    "labels": datasets.Sequence(datasets.Value("int64")),
    "iscrowd": datasets.Sequence(datasets.Value("int64")),
    "area": datasets.Sequence(datasets.Value("float64")),
}


def _as_array(value, dtype, shape_tail=()):
    array = np.asarray(value.tolist() if hasattr(value, "tolist") else value, dtype=dtype)
    return array.reshape((-1, *shape_tail)) if array.size or shape_tail else array.reshape(-1)


def coco_from_references(references) -> COCO:
    """A pycocotools ground-truth `COCO` object; image ids are the positions in `references`."""
    annotations, categories = [], set()
    for image_id, reference in enumerate(references):
        boxes = _as_array(reference["boxes"], np.float64, (4,))
        labels = _as_array(reference["labels"], np.int64)
        if len(boxes) != len(labels):
            raise ValueError(f"references[{image_id}] has {len(boxes)} boxes but {len(labels)} labels")
        crowd = reference.get("iscrowd")
        crowd = _as_array(crowd, np.int64) if crowd is not None and len(crowd) else np.zeros(len(boxes), np.int64)
        area = reference.get("area")
        area = _as_array(area, np.float64) if area is not None and len(area) else None
        for k, (box, label) in enumerate(zip(boxes, labels, strict=True)):
            width, height = box[2] - box[0], box[3] - box[1]
            if width < 0 or height < 0:
                raise ValueError(f"references[{image_id}]['boxes'][{k}] must be (x1, y1, x2, y2) with x2 >= x1 and "
                                 f"y2 >= y1, got {box.tolist()}")
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "bbox": [float(box[0]), float(box[1]), float(width), float(height)],
                "area": float(area[k]) if area is not None else float(width * height),
                "iscrowd": int(crowd[k]),
            })
            categories.add(int(label))
    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in range(len(references))], "annotations": annotations,
                    "categories": [{"id": c} for c in sorted(categories)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_from_predictions(predictions, ground_truth: COCO) -> COCO:
    """A pycocotools results `COCO` object, as `COCO.loadRes` builds it for boxes (also when there are none)."""
    annotations = []
    for image_id, prediction in enumerate(predictions):
        boxes = _as_array(prediction["boxes"], np.float64, (4,))
        scores = _as_array(prediction["scores"], np.float64)
        labels = _as_array(prediction["labels"], np.int64)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"predictions[{image_id}] has {len(boxes)} boxes, {len(scores)} scores and "
                             f"{len(labels)} labels")
        for box, score, label in zip(boxes, scores, labels, strict=True):
            width, height = box[2] - box[0], box[3] - box[1]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label), "score": float(score),
                "bbox": [float(box[0]), float(box[1]), float(width), float(height)],
                "area": float(width * height), "iscrowd": 0,
            })
    results = COCO()
    results.dataset = {"images": ground_truth.dataset["images"], "categories": ground_truth.dataset["categories"],
                       "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        results.createIndex()
    return results


def evaluate_coco(ground_truth: COCO, results: COCO, per_class: bool = False) -> dict:
    """Run `COCOeval` (bbox) quietly and name its statistics."""
    evaluator = COCOeval(ground_truth, results, iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    output = {name: float(value) for name, value in zip(_STAT_NAMES, evaluator.stats, strict=True)}
    if per_class:
        # precision: (iou thresholds, recall points, classes, area ranges, max dets); area "all", 100 detections.
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        output["classes"] = [int(c) for c in evaluator.params.catIds]
        output["map_per_class"] = [
            float(p[p > -1].mean()) if (p > -1).any() else -1.0 for p in np.moveaxis(precision, 2, 0)
        ]
    return output


def _with_optional_fields(references):
    """References with `iscrowd` (zeros) and `area` (empty: use the box areas) filled in where they are missing."""
    if references is None:
        return None
    filled = []
    for reference in references:
        reference = dict(reference)
        if reference.get("iscrowd") is None:
            reference["iscrowd"] = [0] * len(reference["labels"])
        if reference.get("area") is None:
            reference["area"] = []
        filled.append(reference)
    return filled


class CocoMap(evaluate.Metric):
    """COCO box mAP/mAR (pycocotools), see the module docstring for the inputs."""

    def _info(self):
        return evaluate.MetricInfo(
            description="COCO bounding-box mean average precision and recall, computed by pycocotools' COCOeval.",
            citation="Lin et al., 2014, Microsoft COCO: Common Objects in Context.",
            inputs_description=__doc__,
            features=datasets.Features({"predictions": _PREDICTION, "references": _REFERENCE}),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of images (see the module docstring for the formats)."""
        return super().add_batch(predictions=predictions, references=_with_optional_fields(references), **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image (see the module docstring for the formats)."""
        reference = None if reference is None else _with_optional_fields([reference])[0]
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, per_class: bool = False):
        if len(predictions) != len(references):
            raise ValueError(f"predictions and references must describe the same images, got {len(predictions)} "
                             f"and {len(references)}")
        ground_truth = coco_from_references(references)
        return evaluate_coco(ground_truth, coco_from_predictions(predictions, ground_truth), per_class)
