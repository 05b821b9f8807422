"""Masked-language-modeling accuracy (ViLT's MLM pretraining objective) as an `evaluate` metric.

Inputs, one entry per text: ``predictions`` the predicted token id at every position (the argmax of the MLM logits,
`(text_length,)`), ``references`` the MLM labels (the original id at masked positions, -100 elsewhere, as the
whole-word-masking collator makes them). Only the masked positions count. Outputs ``mlm_accuracy`` (NaN when nothing
is masked) and ``num_masked_tokens``.

This file is self-contained (no relative imports) so that ``evaluate.load("path/to/mlm_accuracy.py")`` works too.
"""

import datasets
import evaluate
import numpy as np

IGNORE_INDEX = -100


class MlmAccuracy(evaluate.Metric):
    """Accuracy of the masked tokens."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Accuracy of masked-token prediction over the masked positions (label != -100).",
            citation="Devlin et al., 2019, BERT; Kim et al., 2021, ViLT.",
            inputs_description=__doc__,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                        "references": datasets.Sequence(datasets.Value("int64"))}),
        )

    def _compute(self, predictions, references):
        if len(predictions) != len(references):
            raise ValueError(f"predictions and references must describe the same texts, got {len(predictions)} and "
                             f"{len(references)}")
        hits = total = 0
        for row, (predicted, labels) in enumerate(zip(predictions, references, strict=True)):
            predicted, labels = np.asarray(predicted, dtype=np.int64), np.asarray(labels, dtype=np.int64)
            if predicted.shape != labels.shape:
                raise ValueError(f"text {row}: predictions have {predicted.size} tokens, references {labels.size}")
            masked = labels != IGNORE_INDEX
            hits += int((predicted[masked] == labels[masked]).sum())
            total += int(masked.sum())
        return {"mlm_accuracy": hits / total if total else float("nan"), "num_masked_tokens": total}
