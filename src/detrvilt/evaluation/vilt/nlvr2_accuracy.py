"""NLVR2 accuracy (Suhr et al., 2019) as an `evaluate` metric: the fraction of (sentence, image pair) examples whose
True/False label is predicted, plus NLVR2's consistency when the example identifiers are given.

Inputs: ``predictions`` and ``references``, one label per example, 1 / True for "the sentence is true of the pair",
0 / False otherwise. Optional ``identifiers`` (NLVR2's ``"{split}-{set}-{pair}-{sentence}"``) add ``consistency``:
the fraction of sentences (examples sharing everything but the pair number) whose every example is right.

This file is self-contained (no relative imports) so that ``evaluate.load("path/to/nlvr2_accuracy.py")`` works too.
"""

import datasets
import evaluate
import numpy as np


def sentence_key(identifier: str) -> str:
    """NLVR2 identifier ``dev-850-0-1`` -> the sentence it belongs to, ``dev-850-1`` (the pair number dropped)."""
    parts = str(identifier).split("-")
    if len(parts) < 4:
        raise ValueError(f"identifiers must look like 'split-set-pair-sentence', got {identifier!r}")
    return "-".join(parts[:-2] + parts[-1:])


class Nlvr2Accuracy(evaluate.Metric):
    """NLVR2 accuracy and, with identifiers, consistency."""

    def _info(self):
        return evaluate.MetricInfo(
            description="NLVR2 accuracy (and consistency when identifiers are given).",
            citation="Suhr et al., 2019, A Corpus for Reasoning About Natural Language Grounded in Photographs.",
            inputs_description=__doc__,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, identifiers=None):
        predicted, truth = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        if predicted.shape != truth.shape or predicted.size == 0:
            raise ValueError(f"predictions and references must be non-empty and of one length, got {predicted.size} "
                             f"and {truth.size}")
        bad = sorted(set(np.unique(np.concatenate([predicted, truth])).tolist()) - {0, 1})
        if bad:
            raise ValueError(f"NLVR2 labels must be 0 (False) or 1 (True), got {bad}")
        right = predicted == truth
        result = {"accuracy": float(right.mean()), "num_examples": int(right.size)}
        if identifiers is not None:
            if len(identifiers) != right.size:
                raise ValueError(f"identifiers must have one entry per example, got {len(identifiers)} for "
                                 f"{right.size}")
            groups: dict[str, bool] = {}
            for identifier, ok in zip(identifiers, right, strict=True):
                key = sentence_key(identifier)
                groups[key] = groups.get(key, True) and bool(ok)
            result["consistency"] = float(np.mean(list(groups.values())))
        return result
