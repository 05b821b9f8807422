"""The synthetic panoptic shapes set and the panoptic training script (a few steps by default; the documented run,
whose PQ must come out near its documented numbers, well above the untrained head's, is marked slow)."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from detrvilt.data.detr.panoptic_shapes import make_panoptic_shapes, panoptic_categories
from detrvilt.modeling.detr.image_processing_detr import DetrImageProcessor
from detrvilt.training.detr.panoptic import panoptic_batch


def test_examples_are_complete_reproducible_coco_panoptic():
    examples = make_panoptic_shapes(6, seed=3, image_size=48)
    again = make_panoptic_shapes(3, seed=3, image_size=48)
    categories = {c["id"]: c for c in panoptic_categories()}
    for example, twin in zip(examples, again, strict=False):  # the first 3 of 6 against a set of 3
        assert np.array_equal(np.asarray(example["image"]), np.asarray(twin["image"]))
        segmentation, info = example["segmentation"], example["segments_info"]
        assert segmentation.shape == (48, 48) and (segmentation > 0).all()  # every pixel is a thing or stuff
        assert sorted(np.unique(segmentation).tolist()) == [s["id"] for s in info]
        for segment in info:
            assert segment["area"] == np.count_nonzero(segmentation == segment["id"]) > 0
            assert categories[segment["category_id"]]["isthing"] == segment["isthing"]
        assert 1 <= sum(s["isthing"] for s in info) <= 2 and sum(1 - s["isthing"] for s in info) in (1, 2)
    with pytest.raises(ValueError, match="stuff"):
        make_panoptic_shapes(1, stuff=("sky",))


def test_batches_carry_one_mask_per_segment():
    examples = make_panoptic_shapes(2, image_size=40)
    batch = panoptic_batch(DetrImageProcessor(do_resize=False), examples)
    for labels, example in zip(batch["labels"], examples, strict=True):
        masks = labels["masks"]
        assert masks.shape == (len(example["segments_info"]), 40, 40)
        assert masks.sum(0).eq(1).all()  # the segments tile the image
        assert labels["class_labels"].tolist() == [s["category_id"] for s in example["segments_info"]]


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_detr_panoptic.py"


def run_script(tmp_path, *args) -> dict:
    output = tmp_path / "summary.json"
    summary = runpy.run_path(str(SCRIPT))["main"]([*args, "--output_file", str(output), "--log_every", "0"])
    assert json.loads(output.read_text())["pq_untrained"] == summary["pq_untrained"]
    return summary


def test_script_runs_both_stages(tmp_path):
    threads = torch.get_num_threads()
    summary = run_script(tmp_path, "--num_train_images", "4", "--num_eval_images", "2", "--image_size", "32",
                         "--d_model", "32", "--layers", "1", "--num_queries", "4", "--steps", "2",
                         "--head_steps", "1", "--batch_size", "2", "--thresholds", "0.5", "--num_threads", "1")
    assert summary["num_threads"] == 1 and torch.get_num_threads() == threads  # the caller's count comes back
    for key in ("pq_untrained", "pq_after_stage1", "pq_after_stage2"):
        assert set(summary[key]) == {"0.5"}
        assert 0.0 <= summary[key]["0.5"]["pq"] <= 1.0 and summary[key]["0.5"]["n"] >= 1
    assert np.isfinite(summary["stage1_final_loss"]) and np.isfinite(summary["stage2_final_loss"])


# The documented run: `python scripts/train_detr_panoptic.py --steps 600 --head_steps 100 --num_threads 1`
# (about 1.5 minutes on one thread of a shared 2-core CPU). Its PQ on the 40 held-out images, measured with 1 thread
# (stage -> threshold -> (pq, pq_things, pq_stuff)). The run repeats exactly at the same thread count on the same kind
# of CPU; another count rounds differently and the training drifts like another seed: seeds 1 and 2 and 2 threads
# gave PQ 0.375-0.401 at threshold 0.5 and 0.200-0.304 at 0.85, stuff PQ 0.74-0.79 and 0.40-0.61, hence the margins
# (the stuff margin is twice the overall one).
DOCUMENTED_PQ = {
    "pq_after_stage1": {"0.85": (0.239, 0.000, 0.477), "0.5": (0.401, 0.065, 0.737)},
    "pq_after_stage2": {"0.85": (0.242, 0.000, 0.485), "0.5": (0.419, 0.077, 0.762)},
}
MARGIN = {"0.85": 0.12, "0.5": 0.08}


@pytest.mark.slow
@pytest.mark.timeout(1200)  # minutes on one thread: a busy machine needs more than the 300 s default
def test_documented_run_reaches_its_pq(tmp_path):
    """The documented run, as the docs give it: the untrained head scores PQ 0; after stage 1 (600 steps) and stage 2
    (100 head-only steps) PQ is near the documented numbers at both score thresholds, nearly all of it from stuff
    (the things only start to pass IoU 0.5 at threshold 0.5, and none reaches the official 0.85 at this budget)."""
    summary = run_script(tmp_path, "--steps", "600", "--head_steps", "100", "--num_threads", "1")
    for threshold in ("0.85", "0.5"):  # no query of the untrained model passes either score threshold
        assert summary["pq_untrained"][threshold]["pq"] == 0.0
    for stage, documented in DOCUMENTED_PQ.items():
        for threshold, (pq, pq_things, pq_stuff) in documented.items():
            result = summary[stage][threshold]
            margin = MARGIN[threshold]
            assert abs(result["pq"] - pq) <= margin, (stage, threshold, result["pq"], pq)
            assert abs(result["pq_stuff"] - pq_stuff) <= 2 * margin, (stage, threshold, result["pq_stuff"])
            assert result["pq_things"] <= pq_things + margin, (stage, threshold, result["pq_things"])
            assert result["pq_stuff"] >= result["pq_things"] + 0.3  # stuff is learned first
        assert summary[stage]["0.85"]["pq"] >= 0.1  # well above the untrained head at the official threshold too
    # the head-only stage keeps or improves the masks of stage 1
    assert summary["pq_after_stage2"]["0.5"]["pq"] >= summary["pq_after_stage1"]["0.5"]["pq"] - 0.02
    assert 4.0 <= summary["stage1_final_loss"] <= 5.3 and summary["stage2_final_loss"] <= summary["stage1_final_loss"]
