"""The panoptic_quality evaluate module on small hand-made cases whose PQ, SQ and RQ are computed by hand."""

import numpy as np
import pytest

from detrvilt.evaluation import METRICS, load_metric


def segments(*items):
    """`(id, category, iscrowd)` triples as a segments_info list."""
    return [{"id": i, "category_id": c, "iscrowd": crowd} for i, c, crowd in items]


def compute(predictions, references, **kwargs):
    metric = load_metric("panoptic_quality")
    metric.add_batch(predictions=predictions, references=references)
    return metric.compute(**kwargs)


def halves_case():
    """4x4: ground truth thing 1 (cat 1) on the left half, stuff 2 (cat 2) on the right half. The predicted thing
    misses the bottom row of the left half (IoU 6/8), the predicted stuff takes it (IoU 8/10)."""
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[:, :2], gt[:, 2:] = 1, 2
    pred = np.full((4, 4), 6, dtype=np.int64)
    pred[:3, :2] = 5
    return ({"segmentation": pred, "segments_info": segments((5, 1, 0), (6, 2, 0))},
            {"segmentation": gt, "segments_info": segments((1, 1, 0), (2, 2, 0))})


def test_metric_is_discovered():
    assert "panoptic_quality" in METRICS


def test_matched_things_and_stuff():
    prediction, reference = halves_case()
    result = compute([prediction], [reference], thing_ids=[1])
    assert result["pq_things"] == pytest.approx(0.75) and result["rq_things"] == 1.0
    assert result["pq_stuff"] == pytest.approx(0.8) and result["sq_stuff"] == pytest.approx(0.8)
    assert result["pq"] == pytest.approx(0.775) and result["n"] == 2
    assert result["n_things"] == 1 and result["n_stuff"] == 1


def test_iou_of_exactly_one_half_is_no_match_and_counts_over_images_add_up():
    prediction, reference = halves_case()
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[:, :2] = 1
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[:, 0] = 1  # IoU 4/8 = 0.5: not a match, so one FN and one FP
    second = ({"segmentation": pred, "segments_info": segments((1, 1, 0))},
              {"segmentation": gt, "segments_info": segments((1, 1, 0))})
    alone = compute([second[0]], [second[1]], thing_ids=[1])
    assert alone["pq"] == 0.0 and alone["sq"] == 0.0 and alone["rq"] == 0.0
    both = compute([prediction, second[0]], [reference, second[1]], thing_ids=[1])
    # category 1 over both images: TP 1 (IoU 0.75), FP 1, FN 1.
    assert both["per_class"][1]["pq"] == pytest.approx(0.75 / 2)
    assert both["per_class"][1]["sq"] == pytest.approx(0.75)
    assert both["per_class"][1]["rq"] == pytest.approx(0.5)
    assert both["pq"] == pytest.approx((0.375 + 0.8) / 2)


def test_void_pixels_leave_the_union_and_excuse_false_positives():
    gt = np.zeros((4, 4), dtype=np.int64)  # columns 2 and 3 are void
    gt[:, 0], gt[:, 1] = 1, 2
    pred = np.full((4, 4), 2, dtype=np.int64)
    pred[:, 0] = 1
    reference = {"segmentation": gt, "segments_info": segments((1, 1, 0), (2, 2, 0))}
    # Prediction 2 (category 3) covers column 1 and the void: 8 of its 12 pixels on void, so not a false positive.
    excused = compute([{"segmentation": pred, "segments_info": segments((1, 1, 0), (2, 3, 0))}], [reference])
    assert excused["per_class"] == {1: {"pq": 1.0, "sq": 1.0, "rq": 1.0}, 2: {"pq": 0.0, "sq": 0.0, "rq": 0.0}}
    assert excused["pq"] == pytest.approx(0.5)
    # With half of its pixels on void (not more than half) it is a false positive of category 3.
    pred[:, 3] = 0
    counted = compute([{"segmentation": pred, "segments_info": segments((1, 1, 0), (2, 3, 0))}], [reference])
    assert counted["n"] == 3 and counted["pq"] == pytest.approx(1 / 3)
    # A prediction over a small object and the void around it: IoU 4/16 without the void rule, 1 with it.
    gt_small = np.zeros((4, 4), dtype=np.int64)
    gt_small[:, 0] = 1
    whole = compute([{"segmentation": np.ones((4, 4), dtype=np.int64), "segments_info": segments((1, 1, 0))}],
                    [{"segmentation": gt_small, "segments_info": segments((1, 1, 0))}])
    assert whole["pq"] == 1.0


@pytest.mark.parametrize("category, expected_pq, expected_n", [(1, 1.0, 1), (2, 0.5, 2)])
def test_crowd_regions_never_match_and_excuse_predictions_of_their_category(category, expected_pq, expected_n):
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[:, :2] = 1  # a crowd region of category 1
    gt[:2, 2:] = 2
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[:, :2] = 1
    pred[:2, 2:] = 2
    reference = {"segmentation": gt, "segments_info": segments((1, 1, 1), (2, 1, 0))}
    prediction = {"segmentation": pred, "segments_info": segments((1, category, 0), (2, 1, 0))}
    result = compute([prediction], [reference], categories=[{"id": 1, "isthing": 1}, {"id": 2, "isthing": 1}])
    assert result["per_class"][1] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}  # the crowd is no false negative
    assert result["pq"] == pytest.approx(expected_pq) and result["n"] == expected_n


def test_bad_inputs_raise():
    prediction, reference = halves_case()
    prediction["segments_info"] = segments((5, 1, 0))  # segment 6 is in the map but not listed
    with pytest.raises(ValueError, match="segment id 6"):
        compute([prediction], [reference])
    prediction, reference = halves_case()
    prediction["segments_info"].append({"id": 9, "category_id": 1})  # listed but not in the map
    with pytest.raises(ValueError, match=r"segments \[9\]"):
        compute([prediction], [reference])
    prediction, reference = halves_case()
    with pytest.raises(ValueError, match="not in categories"):
        compute([prediction], [reference], categories=[{"id": 1, "isthing": 1}])
