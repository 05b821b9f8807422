"""VQA accuracy as an `evaluate` metric, equal to the official VQA evaluation (Antol et al., 2015; Goyal et al., 2017;
GT-Vision-Lab/VQA, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, its Python 3 version), used by ViLT (Kim et
al., 2021) for VQAv2.

Per question, with the human answers ``a_1 .. a_n`` (n = 10 on VQAv2) and a predicted answer ``p``, the official
evaluation does exactly this, and so does this module (written here from the rules, not copied):

1. ``p`` gets the full processing: new lines and tabs to spaces, strip, the punctuation rule, then lower case,
   number words to digits, articles dropped, contractions restored (``detrvilt.data.vilt.vqa.normalize_answer``).
2. The human answers get **only the punctuation rule, and only when they are not all the same string**; they are
   never lower-cased, stripped or mapped to digits, and ten identical answers are left untouched.
3. The accuracy is the mean, over the n annotators left out in turn, of ``min(1, #{other annotators whose answer
   equals p} / 3)`` (3 matches out of 10 score 0.9, not 1.0).

Quirks that follow from this, kept on purpose so that the number is the official one (see
``detrvilt.data.vilt.vqa`` for the punctuation rule's own quirks):

- a prediction ``t-shirt`` scores 0 against ten annotators who all wrote ``t-shirt`` (the prediction becomes
  ``t shirt``, the unanimous answers stay ``t-shirt``), and 1 when one annotator wrote something else (then every
  answer goes through the punctuation rule too);
- ``two`` scores 0 against ten times ``two`` (the prediction becomes ``2``); ``Yes`` scores 1 against ``yes``
  (the prediction is lower-cased) but ``yes`` scores 0 against ten times ``Yes``. The official annotations are
  already lower case with digits, which is why this rarely matters there;
- a question with one answer scores 0 (leaving its only annotator out leaves nobody to agree with).

The official script reports ``round(100 * mean, 2)``; ``vqa_score`` here is the unrounded mean in [0, 1] (times
100 gives the papers' "accuracy") and ``overall`` the official rounded percentage. For a score that normalizes the
human answers like the prediction, every time, use ``vqa_score_lenient``.

Inputs: ``predictions`` (one answer string per question), ``references`` (per question, the annotators' answer
strings, each annotator once, in any order). Outputs: ``vqa_score``, ``overall``, ``num_questions``.

The answer processing is imported from ``detrvilt.data.vilt.vqa`` (absolutely, so that
``evaluate.load("path/to/vqa_score.py")`` works too wherever detrvilt is installed).
"""

import datasets
import evaluate
import numpy as np

from detrvilt.data.vilt.vqa import normalize_answer, process_punctuation


def official_question_accuracy(prediction: str, answers) -> float:
    """The official accuracy of one raw prediction against the raw human answers (the three steps above)."""
    if len(answers) == 0:
        raise ValueError("every question needs at least one reference answer, got an empty list")
    processed = normalize_answer(prediction)
    if len(set(answers)) > 1:
        answers = [process_punctuation(answer) for answer in answers]
    matches = np.array([answer == processed for answer in answers], dtype=np.float64)  # (n,)
    others = matches.sum() - matches  # matches among the n - 1 other annotators, for each left-out annotator
    return float(np.minimum(1.0, others / 3.0).mean())


class VqaScore(evaluate.Metric):
    """The official VQA accuracy (see the module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="VQA accuracy as the official evaluation computes it: the prediction fully processed, the "
                        "annotators' answers punctuation-processed when they disagree, mean over leave-one-out "
                        "annotator subsets of min(1, matches / 3).",
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
        scores = [official_question_accuracy(p, answers) for p, answers in zip(predictions, references, strict=True)]
        mean = float(np.mean(scores))
        return {"vqa_score": mean, "overall": round(100 * mean, 2), "num_questions": len(scores)}
