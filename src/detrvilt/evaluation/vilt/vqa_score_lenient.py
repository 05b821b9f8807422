"""A lenient VQA accuracy as an `evaluate` metric: the official leave-one-out formula, but every human answer gets
the same full processing as the prediction (punctuation, lower case, digits, articles, contractions), always.

It answers "is the predicted answer one the annotators gave, up to spelling?": a prediction ``t-shirt`` scores 1
against ten ``t-shirt`` and ``two`` scores 1 against ten ``two``, where the official evaluation (``vqa_score``, the
number to report) scores both 0. This is also how ViLT's training targets are built (``detrvilt.data.vilt.vqa``:
every annotator answer normalized), so it measures a model against its own targets. Unlike the official evaluation,
a question with a single answer scores ``min(1, matches / 3)`` instead of 0.

Inputs and outputs as ``vqa_score``: ``predictions``, ``references``; ``vqa_score`` (in [0, 1]), ``num_questions``.
"""

import datasets
import evaluate
import numpy as np

from detrvilt.data.vilt.vqa import normalize_answer


def lenient_question_accuracy(prediction: str, answers) -> float:
    """Mean over leave-one-out annotator subsets of min(1, matches / 3), every answer normalized like `prediction`."""
    if len(answers) == 0:
        raise ValueError("every question needs at least one reference answer, got an empty list")
    processed = normalize_answer(prediction)
    matches = np.array([normalize_answer(a) == processed for a in answers], dtype=np.float64)  # (n,)
    others = matches if len(answers) == 1 else matches.sum() - matches
    return float(np.minimum(1.0, others / 3.0).mean())


class VqaScoreLenient(evaluate.Metric):
    """VQA accuracy with every answer normalized (see the module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Lenient VQA accuracy: prediction and every human answer normalized alike, then the mean "
                        "over leave-one-out annotator subsets of min(1, matches / 3).",
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
        scores = [lenient_question_accuracy(p, a) for p, a in zip(predictions, references, strict=True)]
        return {"vqa_score": float(np.mean(scores)), "num_questions": len(scores)}
