"""The coco_map evaluate module gives exactly pycocotools' numbers on the same data."""

import contextlib
import io
import json

import evaluate
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detrvilt.evaluation import load_metric, metric_path

STATS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large",
         "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]


def synthetic_detection_problem(num_images=12, seed=0):
    """Ground truth of varied sizes and classes (some crowd), and a perturbed prediction set: jittered true boxes,
    missed objects, false positives, confused classes, uninformative scores."""
    rng = np.random.default_rng(seed)
    references, predictions = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 7))
        size = rng.choice([12.0, 40.0, 150.0], size=(n, 1)) * rng.uniform(0.7, 1.4, size=(n, 2))  # small..large
        corner = rng.uniform(0, 400, size=(n, 2))
        boxes = np.concatenate([corner, corner + size], axis=1)
        labels = rng.integers(1, 4, size=n)
        crowd = (rng.random(n) < 0.1).astype(int)
        references.append({"boxes": boxes.tolist(), "labels": labels.tolist(), "iscrowd": crowd.tolist()})

        keep = rng.random(n) > 0.2
        jitter = rng.normal(0, 0.08, size=(n, 4)) * np.repeat(size, 2, axis=1)
        pred_boxes = (boxes + jitter)[keep]
        pred_labels = np.where(rng.random(n) < 0.15, rng.integers(1, 4, size=n), labels)[keep]
        extra = int(rng.integers(0, 3))
        extra_corner = rng.uniform(0, 400, size=(extra, 2))
        extra_boxes = np.concatenate([extra_corner, extra_corner + rng.uniform(10, 120, size=(extra, 2))], axis=1)
        pred_boxes = np.concatenate([pred_boxes, extra_boxes])
        pred_labels = np.concatenate([pred_labels, rng.integers(1, 4, size=extra)])
        scores = rng.uniform(0.05, 1.0, size=len(pred_boxes))
        predictions.append({"boxes": pred_boxes.tolist(), "scores": scores.tolist(), "labels": pred_labels.tolist()})
    return predictions, references


def pycocotools_stats(predictions, references, tmp_path):
    """Write the COCO json files a user would have and run COCOeval on them directly."""
    images, annotations, detections = [], [], []
    for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        image_id = 1000 + 7 * i  # arbitrary ids, as in a real annotation file
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for box, label, crowd in zip(reference["boxes"], reference["labels"], reference["iscrowd"], strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": crowd})
        for box, score, label in zip(prediction["boxes"], prediction["scores"], prediction["labels"], strict=True):
            detections.append({"image_id": image_id, "category_id": int(label), "score": score,
                               "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                  "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}))
    (tmp_path / "dt.json").write_text(json.dumps(detections))
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(str(tmp_path / "dt.json")), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STATS, evaluator.stats.tolist(), strict=True))


def test_equals_pycocotools_on_a_perturbed_prediction_set(tmp_path):
    predictions, references = synthetic_detection_problem()
    expected = pycocotools_stats(predictions, references, tmp_path)
    assert 0.2 < expected["map"] < 0.9 and expected["map_small"] > -1 and expected["map_large"] > -1
    metric = load_metric("coco_map")
    # Two batches, as an evaluation loop adds them.
    metric.add_batch(predictions=predictions[:5], references=references[:5])
    metric.add_batch(predictions=predictions[5:], references=references[5:])
    result = metric.compute()
    assert {k: result[k] for k in STATS} == expected  # to the last digit


def test_evaluate_load_on_the_file_and_per_class(tmp_path):
    predictions, references = synthetic_detection_problem(seed=1)
    result = evaluate.load(str(metric_path("coco_map"))).compute(
        predictions=predictions, references=references, per_class=True)
    assert result["map"] == pycocotools_stats(predictions, references, tmp_path)["map"]
    assert result["classes"] == [1, 2, 3] and len(result["map_per_class"]) == 3
    assert np.mean(result["map_per_class"]) == pytest.approx(result["map"])


def test_perfect_and_empty_predictions():
    references = [{"boxes": [[10, 10, 60, 90], [100, 100, 300, 200]], "labels": [1, 2]}]
    perfect = [{"boxes": references[0]["boxes"], "scores": [0.9, 0.8], "labels": [1, 2]}]
    metric = load_metric("coco_map")
    assert metric.compute(predictions=perfect, references=references)["map"] == pytest.approx(1.0)
    empty = metric.compute(predictions=[{"boxes": [], "scores": [], "labels": []}], references=references)
    assert empty["map"] == 0.0 and empty["mar_100"] == 0.0


def test_optional_area_changes_the_size_split():
    references = [{"boxes": [[0, 0, 100, 100]], "labels": [1], "area": [500.0]}]  # a small object by its area
    predictions = [{"boxes": [[0, 0, 100, 100]], "scores": [0.9], "labels": [1]}]
    result = load_metric("coco_map").compute(predictions=predictions, references=references)
    assert result["map_small"] == pytest.approx(1.0) and result["map_large"] == -1.0


def test_bad_input_names_the_image():
    metric = load_metric("coco_map")
    with pytest.raises(ValueError, match=r"references\[0\]\['boxes'\]\[0\] must be \(x1, y1, x2, y2\)"):
        metric.compute(predictions=[{"boxes": [], "scores": [], "labels": []}],
                       references=[{"boxes": [[50, 50, 10, 10]], "labels": [1]}])
    with pytest.raises(ValueError, match=r"predictions\[0\] has 1 boxes, 2 scores"):
        metric.compute(predictions=[{"boxes": [[0, 0, 1, 1]], "scores": [0.5, 0.4], "labels": [1]}],
                       references=[{"boxes": [], "labels": []}])
