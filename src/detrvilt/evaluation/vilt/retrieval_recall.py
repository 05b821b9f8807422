"""Image-text retrieval recall@K (text -> image and image -> text) from a full score matrix, as an `evaluate` metric.

ViLT (Kim et al., 2021) scores every (image, text) pair with its cross-encoder (the rank head on the pooled output)
and reports R@1/5/10 both ways on Flickr30k and MSCOCO 5k. This module takes the scores, one row per image:

- ``predictions``: per image, its scores against every text (`(num_texts,)`, higher = better match);
- ``references``: per image, the indices of its matching texts (COCO/Flickr30k: five captions per image).

Image -> text R@K: the fraction of images with at least one matching text among their K best texts. Text -> image
R@K: the fraction of texts whose image is among the K best images of that text's column. Ties are broken by the
lower index (a stable sort), as in a brute-force ranking. Outputs ``ir_r1, ir_r5, ir_r10`` (text -> image, "image
retrieval"), ``tr_r1, tr_r5, tr_r10`` (image -> text, "text retrieval"), ``rsum`` and the counts; values in [0, 1].
Every text must belong to exactly one image.

This file is self-contained (no relative imports) so that ``evaluate.load("path/to/retrieval_recall.py")`` works too.
"""

import datasets
import evaluate
import numpy as np


def recall_at_k(scores: np.ndarray, text_to_image: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Recalls from a `(num_images, num_texts)` score matrix and the image index of every text (`(num_texts,)`)."""
    num_images, num_texts = scores.shape
    depth = min(max(ks), max(num_images, num_texts))
    # image -> text: for each image, its best `depth` texts, then whether any of them is one of its own
    top_texts = np.argsort(-scores, axis=1, kind="stable")[:, :depth]  # (I, depth)
    own_text = text_to_image[top_texts] == np.arange(num_images)[:, None]  # (I, depth)
    # text -> image: for each text, its best `depth` images, then whether its own image is among them
    top_images = np.argsort(-scores.T, axis=1, kind="stable")[:, :depth]  # (T, depth)
    own_image = top_images == text_to_image[:, None]  # (T, depth)
    result = {}
    for k in ks:
        result[f"ir_r{k}"] = float(own_image[:, :k].any(axis=1).mean())
        result[f"tr_r{k}"] = float(own_text[:, :k].any(axis=1).mean())
    result["rsum"] = sum(result.values())
    result["num_images"], result["num_texts"] = int(num_images), int(num_texts)
    return result


class RetrievalRecall(evaluate.Metric):
    """Recall@1/5/10 both ways from a full image x text score matrix."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Image-text retrieval recall@K (text->image and image->text) from a full score matrix.",
            citation="Kim et al., 2021, ViLT; Karpathy and Fei-Fei, 2015 (the COCO/Flickr30k retrieval splits).",
            inputs_description=__doc__,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")),
                                        "references": datasets.Sequence(datasets.Value("int64"))}),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10)):
        scores = np.asarray(predictions, dtype=np.float64)
        if scores.ndim != 2 or scores.size == 0:
            raise ValueError("predictions must be one row of scores per image, all rows of the same length "
                             f"(num_texts); got shape {scores.shape}")
        num_images, num_texts = scores.shape
        if len(references) != num_images:
            raise ValueError(f"references must list the matching texts of each of the {num_images} images, got "
                             f"{len(references)} entries")
        text_to_image = np.full(num_texts, -1, dtype=np.int64)
        for image, texts in enumerate(references):
            for text in texts:
                if not 0 <= text < num_texts:
                    raise ValueError(f"references[{image}] holds text index {text}, outside [0, {num_texts})")
                if text_to_image[text] >= 0:
                    raise ValueError(f"text {text} is listed for images {text_to_image[text]} and {image}; each text "
                                     "belongs to one image")
                text_to_image[text] = image
        orphans = np.flatnonzero(text_to_image < 0)
        if orphans.size:
            raise ValueError(f"texts {orphans[:5].tolist()} belong to no image; every text needs its image")
        return recall_at_k(scores, text_to_image, tuple(int(k) for k in ks))
