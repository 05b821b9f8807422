"""ViLT's metrics as `evaluate` modules: the lenient VQA accuracy against a direct transcription of the leave-one-out
formula (the official `vqa_score` has its own tests in test_vqa_official_score.py), retrieval recall@K against a
brute-force ranking, the accuracies of NLVR2, MLM and ITM, and word-patch pointing on hand-made plans."""

import math

import numpy as np
import pytest

from detrvilt.data.vilt.vqa import normalize_answer
from detrvilt.evaluation import METRICS, load_metric


def lenient_vqa_accuracy(prediction, answers):
    """The VQA API's loop (vqaEval.py), written out, every answer normalized: for every annotator, the other
    annotators who gave the answer."""
    accuracies = []
    for left_out in range(len(answers)):
        others = [a for i, a in enumerate(answers) if i != left_out]
        matching = [a for a in others if normalize_answer(a) == normalize_answer(prediction)]
        accuracies.append(min(1.0, len(matching) / 3))
    return sum(accuracies) / len(accuracies)


HAND_CASES = [
    ("yes", ["yes"] * 10, 1.0),
    ("no", ["yes"] * 10, 0.0),
    ("2", ["2"] * 3 + ["3"] * 7, 0.9),  # 3 matches: 7 subsets see 3 (1.0), 3 subsets see 2 (0.667) -> 0.9
    ("2", ["2"] * 2 + ["3"] * 8, 0.6),
    ("2", ["2"] + ["3"] * 9, 0.3),
    ("2", ["2"] * 4 + ["3"] * 6, 1.0),
    ("Two", ["2"] * 3 + ["two"] + ["3"] * 6, 1.0),  # number words and case are normalized (officially 0.9)
    ("a dog", ["dog", "dog", "the dog", "cat", "cat", "cat", "cat", "cat", "cat", "cat"], 0.9),  # officially 0.6
    ("t-shirt", ["T-Shirt"] * 10, 1.0),  # officially 0
]


@pytest.mark.parametrize("prediction, answers, expected", HAND_CASES)
def test_lenient_vqa_score_equals_the_formula_on_hand_cases(prediction, answers, expected):
    metric = load_metric("vqa_score_lenient")
    result = metric.compute(predictions=[prediction], references=[answers])
    assert result["vqa_score"] == pytest.approx(lenient_vqa_accuracy(prediction, answers), abs=1e-9)
    assert result["vqa_score"] == pytest.approx(expected, abs=1e-9)


def test_vqa_score_averages_questions_and_checks_lengths():
    predictions = [case[0] for case in HAND_CASES]
    references = [case[1] for case in HAND_CASES]
    result = load_metric("vqa_score_lenient").compute(predictions=predictions, references=references)
    assert result["num_questions"] == len(HAND_CASES)
    assert result["vqa_score"] == pytest.approx(np.mean([lenient_vqa_accuracy(p, r) for p, r in
                                                         zip(predictions, references, strict=True)]))
    with pytest.raises(ValueError, match="references"):
        load_metric("vqa_score").compute(predictions=["yes", "no"], references=[["yes"] * 10])


def brute_force_recall(scores, text_to_image, k):
    """Ranks by explicit sorting of (score, index) pairs, pair by pair."""
    num_images, num_texts = scores.shape
    image_hits = 0
    for i in range(num_images):
        ranked = sorted(range(num_texts), key=lambda t: (-scores[i, t], t))[:k]
        image_hits += any(text_to_image[t] == i for t in ranked)
    text_hits = 0
    for t in range(num_texts):
        ranked = sorted(range(num_images), key=lambda i: (-scores[i, t], i))[:k]
        text_hits += text_to_image[t] in ranked
    return text_hits / num_texts, image_hits / num_images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_k_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_images, captions_per_image = 12, 3
    num_texts = num_images * captions_per_image
    scores = rng.normal(size=(num_images, num_texts)).round(1)  # rounding makes ties, broken by index
    order = rng.permutation(num_texts)
    text_to_image = np.repeat(np.arange(num_images), captions_per_image)[order]
    references = [np.flatnonzero(text_to_image == i).tolist() for i in range(num_images)]
    result = load_metric("retrieval_recall").compute(predictions=scores.tolist(), references=references)
    for k in (1, 5, 10):
        text_to_image_recall, image_to_text_recall = brute_force_recall(scores.astype(np.float32), text_to_image, k)
        assert result[f"ir_r{k}"] == pytest.approx(text_to_image_recall), k
        assert result[f"tr_r{k}"] == pytest.approx(image_to_text_recall), k
    assert result["num_images"] == num_images and result["num_texts"] == num_texts


def test_recall_is_one_for_a_perfect_matrix_and_rejects_orphan_texts():
    scores = np.eye(5) * 3 + 0.1
    result = load_metric("retrieval_recall").compute(predictions=scores.tolist(), references=[[i] for i in range(5)])
    assert result["ir_r1"] == result["tr_r1"] == 1.0
    with pytest.raises(ValueError, match="belong to no image"):
        load_metric("retrieval_recall").compute(predictions=scores.tolist(), references=[[0], [1], [2], [3], []])


def test_nlvr2_itm_and_mlm_accuracies():
    assert {"vqa_score", "vqa_score_lenient", "nlvr2_accuracy", "retrieval_recall", "mlm_accuracy", "itm_accuracy",
            "wpa_pointing"} <= set(METRICS)
    nlvr2 = load_metric("nlvr2_accuracy").compute(
        predictions=[1, 0, 1, 1], references=[1, 0, 0, 1],
        identifiers=["dev-1-0-0", "dev-1-1-0", "dev-1-2-0", "dev-2-0-1"])
    assert nlvr2["accuracy"] == 0.75
    assert nlvr2["consistency"] == 0.5  # sentence dev-1-0 has a wrong pair, dev-2-1 is all right
    itm = load_metric("itm_accuracy").compute(predictions=[[0.1, 0.9], [2.0, -1.0], [0.3, 0.2], [0.0, 1.0]],
                                              references=[1, 0, 1, 0])
    assert itm["itm_accuracy"] == 0.5
    assert itm["itm_accuracy_matched"] == 0.5 and itm["itm_accuracy_replaced"] == 0.5
    mlm = load_metric("mlm_accuracy").compute(predictions=[[5, 6, 7], [1, 2, 3]],
                                              references=[[-100, 6, 8], [1, -100, -100]])
    assert mlm["mlm_accuracy"] == pytest.approx(2 / 3) and mlm["num_masked_tokens"] == 3
    empty = load_metric("mlm_accuracy").compute(predictions=[[1]], references=[[-100]])
    assert math.isnan(empty["mlm_accuracy"])


def test_wpa_pointing_on_hand_made_plans():
    """A 3 x 4 grid of 10-pixel patches. Word 0's mass peaks on patch (1, 2), centre (25, 15), inside its box; word
    1's peaks on (0, 0), centre (5, 5), outside its box; word 2's peaks on the padding column (2, 3), which does not
    count: its largest real patch (2, 2), centre (25, 25), is inside the box."""
    plans = np.zeros((3, 3, 4))
    plans[0, 1, 2] = 0.6
    plans[0, 0, 0] = 0.1
    plans[1, 0, 0] = 0.5
    plans[1, 1, 1] = 0.4
    plans[2, 2, 3] = 0.9  # beyond the image's 30-pixel width
    plans[2, 2, 2] = 0.1
    boxes = [[20, 10, 30, 20], [10, 10, 30, 30], [20, 20, 30, 30]]
    result = load_metric("wpa_pointing").compute(predictions=plans.tolist(), references=boxes, patch_size=10,
                                                 image_sizes=[(30, 40), (30, 40), (30, 30)])
    assert result["pointing_accuracy"] == pytest.approx(2 / 3) and result["num_words"] == 3
    # chance: patch centres in the box over real patches: 1/12, 4/12, 1/9; area shares 100/1200, 400/1200, 100/900
    assert result["chance"] == pytest.approx((1 / 12 + 4 / 12 + 1 / 9) / 3)
    assert result["box_area_share"] == pytest.approx((100 / 1200 + 400 / 1200 + 100 / 900) / 3)
    # without image sizes the padding column counts: word 2 now points outside its box
    whole = load_metric("wpa_pointing").compute(predictions=plans.tolist(), references=boxes, patch_size=10)
    assert whole["pointing_accuracy"] == pytest.approx(1 / 3)
    ties = np.ones((1, 2, 2)).tolist()  # a flat plan points at the first patch, row-major
    assert load_metric("wpa_pointing").compute(predictions=ties, references=[[0, 0, 10, 10]],
                                               patch_size=10)["pointing_accuracy"] == 1.0
    with pytest.raises(ValueError, match="patch_size"):
        load_metric("wpa_pointing").compute(predictions=ties, references=[[0, 0, 10, 10]])
    with pytest.raises(ValueError, match="x1 > x0"):
        load_metric("wpa_pointing").compute(predictions=ties, references=[[5, 0, 5, 10]], patch_size=10)
