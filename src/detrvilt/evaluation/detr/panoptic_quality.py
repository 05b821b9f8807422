"""Panoptic quality (PQ, SQ, RQ; all, things, stuff) as an `evaluate` metric, as the reference panopticapi computes it.

Kirillov et al., 2019, "Panoptic Segmentation". The definition is that of cocodataset/panopticapi's
``pq_compute_single_core`` and ``PQStat.pq_average``:

- a predicted and a ground-truth segment of the same category match when their IoU is above 0.5, where the union
  leaves out the predicted pixels that fall on void (ground-truth id 0); crowd ground-truth segments never match;
- unmatched non-crowd ground-truth segments are false negatives; an unmatched prediction is a false positive
  unless more than half of its pixels fall on void or on a crowd segment of its category;
- per category ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``;
  categories with no TP, FP or FN are left out of the averages; ``pq``/``sq``/``rq`` average all categories,
  ``*_things`` and ``*_stuff`` those with ``isthing`` true / false. Values are in [0, 1] (panopticapi prints x100).

Inputs, one entry per image, with segment-id maps of the same size (`(H, W)` integers, 0 = void/unlabelled):

- ``predictions``: ``{"segmentation": (H, W), "segments_info": [{"id", "label_id" or "category_id"}, ...]}`` (what
  ``post_process_panoptic_segmentation`` returns);
- ``references``: ``{"segmentation": (H, W), "segments_info": [{"id", "category_id", "iscrowd" (optional)}, ...]}``.

``compute(thing_ids=[...])`` (or ``categories=[{"id", "isthing"}]``, which also rejects unknown category ids, as
panopticapi does) says which categories are things; every other category seen is stuff. Segment areas are pixel
counts of the maps (panopticapi takes the ground truth's from its json, which are the same counts). This file is
self-contained (no relative imports) so that ``evaluate.load(path)`` works.
"""

from collections import defaultdict

import datasets
import evaluate
import numpy as np

VOID = 0
OFFSET = 256 * 256 * 256

_FEATURES = {
    "segmentation": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
    "segment_ids": datasets.Sequence(datasets.Value("int64")),
    "category_ids": datasets.Sequence(datasets.Value("int64")),
    "iscrowd": datasets.Sequence(datasets.Value("int64")),
}


def _flatten(entry, where: str) -> dict:
    """The `segments_info` list of one image as parallel lists (the layout `evaluate` stores)."""
    if "segments_info" not in entry or "segmentation" not in entry:
        raise ValueError(f"{where} must have 'segmentation' and 'segments_info', got keys {sorted(entry)}")
    segmentation = entry["segmentation"]
    segmentation = np.asarray(segmentation.tolist() if hasattr(segmentation, "tolist") else segmentation)
    if segmentation.ndim != 2 or not np.issubdtype(segmentation.dtype, np.integer):
        raise ValueError(f"{where}['segmentation'] must be an (H, W) integer map, got {segmentation.dtype} "
                         f"of shape {segmentation.shape}")
    ids, categories, crowd = [], [], []
    for j, segment in enumerate(entry["segments_info"]):
        category = segment.get("category_id", segment.get("label_id"))
        if "id" not in segment or category is None:
            raise ValueError(f"{where}['segments_info'][{j}] needs 'id' and 'category_id' (or 'label_id'), got "
                             f"{segment!r}")
        ids.append(int(segment["id"]))
        categories.append(int(category))
        crowd.append(int(segment.get("iscrowd", 0)))
    return {"segmentation": segmentation.tolist(), "segment_ids": ids, "category_ids": categories, "iscrowd": crowd}


def _segments(entry, where: str) -> tuple[np.ndarray, dict]:
    segmentation = np.asarray(entry["segmentation"], dtype=np.int64)
    segments = {}
    for segment_id, category, crowd in zip(entry["segment_ids"], entry["category_ids"], entry["iscrowd"], strict=True):
        if segment_id == VOID:
            raise ValueError(f"{where}: segment id 0 is reserved for void")
        if segment_id in segments:
            raise ValueError(f"{where}: segment id {segment_id} is listed twice")
        segments[segment_id] = {"category_id": category, "iscrowd": crowd, "area": 0}
    ids, counts = np.unique(segmentation, return_counts=True)
    for segment_id, count in zip(ids.tolist(), counts.tolist(), strict=True):
        if segment_id == VOID:
            continue
        if segment_id not in segments:
            raise ValueError(f"{where}: segment id {segment_id} is in the map but not in segments_info")
        segments[segment_id]["area"] = count
    return segmentation, segments


def pq_statistics(predictions, references) -> dict:
    """Per-category sums over all images: `{category: {"iou", "tp", "fp", "fn"}}` (panopticapi's `PQStat`)."""
    stats = defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
    for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        gt_map, gt_segments = _segments(reference, f"references[{index}]")
        pred_map, pred_segments = _segments(prediction, f"predictions[{index}]")
        absent = sorted(i for i, segment in pred_segments.items() if segment["area"] == 0)
        if absent:  # panopticapi refuses these too
            raise ValueError(f"predictions[{index}]: segments {absent} are in segments_info but not in the map")
        if gt_map.shape != pred_map.shape:
            raise ValueError(f"predictions[{index}]['segmentation'] has shape {pred_map.shape}, the reference "
                             f"{gt_map.shape}")
        pairs, counts = np.unique(gt_map * OFFSET + pred_map, return_counts=True)
        intersections = {(int(p // OFFSET), int(p % OFFSET)): int(c) for p, c in zip(pairs, counts, strict=True)}

        gt_matched, pred_matched = set(), set()
        for (gt_id, pred_id), intersection in intersections.items():
            if gt_id not in gt_segments or pred_id not in pred_segments:
                continue
            gt, pred = gt_segments[gt_id], pred_segments[pred_id]
            if gt["iscrowd"] == 1 or gt["category_id"] != pred["category_id"]:
                continue
            union = pred["area"] + gt["area"] - intersection - intersections.get((VOID, pred_id), 0)
            iou = intersection / union
            if iou > 0.5:
                stats[gt["category_id"]]["tp"] += 1
                stats[gt["category_id"]]["iou"] += iou
                gt_matched.add(gt_id)
                pred_matched.add(pred_id)

        crowd_by_category = {}
        for gt_id, gt in gt_segments.items():
            if gt_id in gt_matched:
                continue
            if gt["iscrowd"] == 1:
                crowd_by_category[gt["category_id"]] = gt_id
                continue
            stats[gt["category_id"]]["fn"] += 1

        for pred_id, pred in pred_segments.items():
            if pred_id in pred_matched:
                continue
            ignored = intersections.get((VOID, pred_id), 0)  # predicted pixels on void ...
            if pred["category_id"] in crowd_by_category:  # ... or on a crowd region of the same category
                ignored += intersections.get((crowd_by_category[pred["category_id"]], pred_id), 0)
            if ignored / max(pred["area"], 1) > 0.5:
                continue
            stats[pred["category_id"]]["fp"] += 1
    return dict(stats)


def pq_average(stats: dict, thing_ids: set) -> dict:
    """`pq`, `sq`, `rq`, `n` (categories counted) for all, things and stuff, and per-category values."""
    per_class = {}
    for category, s in stats.items():
        tp, fp, fn, iou = s["tp"], s["fp"], s["fn"], s["iou"]
        if tp + fp + fn == 0:
            continue
        per_class[category] = {
            "pq": iou / (tp + 0.5 * fp + 0.5 * fn),
            "sq": iou / tp if tp else 0.0,
            "rq": tp / (tp + 0.5 * fp + 0.5 * fn),
        }
    output = {}
    groups = {"": lambda c: True, "_things": lambda c: c in thing_ids, "_stuff": lambda c: c not in thing_ids}
    for suffix, member in groups.items():
        chosen = [v for c, v in per_class.items() if member(c)]
        for name in ("pq", "sq", "rq"):
            output[name + suffix] = float(np.mean([v[name] for v in chosen])) if chosen else 0.0
        output["n" + suffix] = len(chosen)
    output["per_class"] = {int(c): v for c, v in sorted(per_class.items())}
    return output


class PanopticQuality(evaluate.Metric):
    """Panoptic quality as panopticapi computes it; see the module docstring for the inputs."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Panoptic quality (PQ), segmentation quality (SQ) and recognition quality (RQ), overall, "
                        "for things and for stuff, as cocodataset/panopticapi computes them.",
            citation="Kirillov et al., 2019, Panoptic Segmentation.",
            inputs_description=__doc__,
            features=datasets.Features({"predictions": _FEATURES, "references": _FEATURES}),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of images (see the module docstring for the formats)."""
        predictions = None if predictions is None else [
            _flatten(p, f"predictions[{i}]") for i, p in enumerate(predictions)]
        references = None if references is None else [
            _flatten(r, f"references[{i}]") for i, r in enumerate(references)]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image (see the module docstring for the formats)."""
        prediction = None if prediction is None else _flatten(prediction, "prediction")
        reference = None if reference is None else _flatten(reference, "reference")
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, thing_ids=None, categories=None):
        if len(predictions) != len(references):
            raise ValueError(f"predictions and references must describe the same images, got {len(predictions)} "
                             f"and {len(references)}")
        stats = pq_statistics(predictions, references)
        if categories is not None:
            things = {int(c["id"]) for c in categories if c.get("isthing")}
            unknown = sorted(set(stats) - {int(c["id"]) for c in categories})
            if unknown:
                raise ValueError(f"category ids {unknown} are not in categories")
        else:
            things = {int(c) for c in (thing_ids or ())}
        return pq_average(stats, things)
