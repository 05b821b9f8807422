"""Image-text matching accuracy (ViLT's ITM pretraining objective) as an `evaluate` metric.

Inputs: ``predictions``: per pair either the predicted class (1 = the image matches the text, 0 = replaced) or the
two ITM logits ``[not matched, matched]``; ``references``: the true class. Outputs ``itm_accuracy`` and the accuracy
on the matched and on the replaced pairs separately (``itm_accuracy_matched``, ``itm_accuracy_replaced``; NaN when a
kind is absent), since a model that always says "matched" scores 50% on the official half/half batches.

This file is self-contained (no relative imports) so that ``evaluate.load("path/to/itm_accuracy.py")`` works too.
"""

import datasets
import evaluate
import numpy as np


class ItmAccuracy(evaluate.Metric):
    """ITM accuracy, overall and per class."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Image-text matching accuracy (overall, on matched pairs, on replaced pairs).",
            citation="Kim et al., 2021, ViLT: Vision-and-Language Transformer Without Convolution or Region "
                     "Supervision.",
            inputs_description=__doc__,
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32"), length=2),
                                   "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references):
        scores = np.asarray(predictions)
        classes = scores.argmax(-1) if scores.ndim == 2 else scores.astype(np.int64)
        truth = np.asarray(references, dtype=np.int64)
        if classes.shape != truth.shape or truth.size == 0:
            raise ValueError(f"predictions and references must be non-empty and of one length, got {classes.shape} "
                             f"and {truth.shape}")
        right = classes == truth

        def part(mask):
            return float(right[mask].mean()) if mask.any() else float("nan")

        return {"itm_accuracy": float(right.mean()), "itm_accuracy_matched": part(truth == 1),
                "itm_accuracy_replaced": part(truth == 0), "num_pairs": int(truth.size)}
