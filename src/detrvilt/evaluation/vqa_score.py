"""VQA accuracy as an `evaluate` metric: the official soft accuracy of the VQA challenge (Antol et al., 2015;
Goyal et al., 2017), used by ViLT (Kim et al., 2021) for VQAv2.

For one question with the human answers ``a_1 .. a_n`` (n = 10 on VQAv2) and a predicted answer ``p``, the official
evaluation (``vqaEval.py`` of the VQA API) averages, over the n leave-one-out subsets of n - 1 annotators,
``min(1, #{annotators in the subset who answered p} / 3)``. This module computes exactly that (not the common
simplification ``min(1, #matches / 3)`` over all ten answers, which differs when 1..3 annotators gave `p`: for
example 3 matches score 0.9 officially and 1.0 in the simplification; ViLT's training-time score rounds the same way,
0 / 0.3 / 0.6 / 0.9 / 1.0). Both the prediction and the answers are normalized as the official evaluation does
(lower case, punctuation removed, number words to digits, articles dropped); the official code normalizes only when
the annotators disagree, which changes nothing for the answers that match exactly. A question with a single
reference answer has no leave-one-out subset (the official formula would score 0); it scores min(1, matches / 3).

Inputs: ``predictions`` (one answer string per question), ``references`` (per question, the list of annotator answer
strings). Output: ``vqa_score`` in [0, 1] (times 100 gives the VQA "accuracy" of the papers) and ``num_questions``.

The answer normalization is imported from ``detrvilt.data.vilt_vqa`` (absolutely, so that
``evaluate.load("path/to/vqa_score.py")`` works too wherever detrvilt is installed).
"""

import datasets
import evaluate
import numpy as np

from detrvilt.data.vilt_vqa import normalize_answer


def normalize(answer: str) -> str:
    """The official evaluation's answer normalization (shared with the VQA targets of `detrvilt.data`)."""
    return normalize_answer(answer)


def question_accuracy(prediction: str, answers) -> float:
    """The official accuracy of one prediction: the mean over leave-one-out subsets of min(1, matches / 3)."""
    if len(answers) == 0:
        raise ValueError("every question needs at least one reference answer, got an empty list")
    matches = np.array([normalize(a) == prediction for a in answers], dtype=np.float64)  # (n,)
    others = matches.sum() - matches  # matches among the n - 1 other annotators, for each left-out annotator
    if len(answers) == 1:
        others = matches  # one annotator: nothing to leave out
    return float(np.minimum(1.0, others / 3.0).mean())


class VqaScore(evaluate.Metric):
    """VQA soft accuracy (see the module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="VQA accuracy: mean over leave-one-out annotator subsets of min(1, matches / 3).",
            citation="Antol et al., 2015, VQA: Visual Question Answering; Goyal et al., 2017, Making the V in VQA "
                     "Matter.",
            inputs_description=__doc__,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references):
        if len(predictions) != len(references):
            raise ValueError(f"predictions and references must describe the same questions, got {len(predictions)} "
                             f"and {len(references)}")
        if not predictions:
            raise ValueError("no question to score")
        scores = [question_accuracy(normalize(p), answers) for p, answers in zip(predictions, references)]
        return {"vqa_score": float(np.mean(scores)), "num_questions": len(scores)}
