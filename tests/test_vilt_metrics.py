"""ViLT's metrics as `evaluate` modules: VQA soft accuracy against a direct transcription of the official formula,
retrieval recall@K against a brute-force ranking, and the accuracies of NLVR2, MLM and ITM."""

import math

import numpy as np
import pytest

from detrvilt.data.vilt_vqa import normalize_answer
from detrvilt.evaluation import METRICS, load_metric


def official_vqa_accuracy(prediction, answers):
    """The VQA API's loop (vqaEval.py), written out: for every annotator, the other annotators who gave the answer."""
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
    ("Two", ["2"] * 3 + ["two"] + ["3"] * 6, 1.0),  # number words and case are normalized
    ("a dog", ["dog", "dog", "the dog", "cat", "cat", "cat", "cat", "cat", "cat", "cat"], 0.9),
]


@pytest.mark.parametrize("prediction, answers, expected", HAND_CASES)
def test_vqa_score_equals_the_official_formula_on_hand_cases(prediction, answers, expected):
    metric = load_metric("vqa_score")
    result = metric.compute(predictions=[prediction], references=[answers])
    assert result["vqa_score"] == pytest.approx(official_vqa_accuracy(prediction, answers), abs=1e-9)
    assert result["vqa_score"] == pytest.approx(expected, abs=1e-9)


def test_vqa_score_averages_questions_and_checks_lengths():
    predictions = [case[0] for case in HAND_CASES]
    references = [case[1] for case in HAND_CASES]
    result = load_metric("vqa_score").compute(predictions=predictions, references=references)
    assert result["num_questions"] == len(HAND_CASES)
    assert result["vqa_score"] == pytest.approx(np.mean([official_vqa_accuracy(p, r) for p, r in
                                                         zip(predictions, references)]))
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
    assert {"vqa_score", "nlvr2_accuracy", "retrieval_recall", "mlm_accuracy", "itm_accuracy"} <= set(METRICS)
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
