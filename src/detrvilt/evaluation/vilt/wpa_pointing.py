"""Word-patch pointing accuracy as an `evaluate` metric: does a word's optimal-transport plan point at the object the
word names?

ViLT (Kim et al., 2021, section 3.2 and figure 4) shows word-patch alignment by drawing each word's row of the IPOT
transport plan between the text tokens and the image patches (``modeling/vilt/wpa_vilt.py``, ``wpa_transport``).
This metric turns the picture into a number, in the manner of the pointing game of saliency maps (Zhang et al.,
2016, "Top-down Neural Attention by Excitation Backprop"): for each word that names one object, the patch that
receives the largest share of the word's transport mass is a hit when its centre lies inside the object's box.

Inputs, one entry per (word, object):

- ``predictions``: the word's transport mass over the patch grid, a `(GH, GW)` nested list (row-major, the padded
  batch's grid); only the arg-max matters (the first one in row-major order on ties);
- ``references``: the object's box ``(x0, y0, x1, y1)`` in pixels of the image the model saw (after resizing),
  ``x1``/``y1`` exclusive;
- ``patch_size`` (`int`, required keyword): pixels per patch side; patch ``(r, c)`` covers
  ``[c * p, (c + 1) * p) x [r * p, (r + 1) * p)`` and its centre is ``((c + 0.5) p, (r + 0.5) p)``;
- ``image_sizes`` (optional keyword): per entry the ``(height, width)`` of the unpadded image; a patch is real
  when its top-left pixel is (the model's rule); by default every patch of the grid is real.

Outputs: ``pointing_accuracy`` (hits / entries), ``chance`` (the hit rate of a patch drawn uniformly among the
real ones: the mean share of real patches whose centre lies in the box), ``box_area_share`` (the mean share of
the image's area inside the box, which the chance level approaches as patches shrink) and ``num_words``.

This file is self-contained (no relative imports) so that ``evaluate.load("path/to/wpa_pointing.py")`` works too.
"""

import datasets
import evaluate
import numpy as np


def patch_centres_in_box(grid_shape, patch_size: int, box) -> np.ndarray:
    """`(GH, GW)` booleans: whether each patch's centre lies in `box` `(x0, y0, x1, y1)` (right/bottom exclusive)."""
    rows, columns = grid_shape
    centre_y = (np.arange(rows) + 0.5) * patch_size  # (GH,)
    centre_x = (np.arange(columns) + 0.5) * patch_size  # (GW,)
    x0, y0, x1, y1 = box
    inside_y = (centre_y >= y0) & (centre_y < y1)
    inside_x = (centre_x >= x0) & (centre_x < x1)
    return inside_y[:, None] & inside_x[None, :]


class WpaPointing(evaluate.Metric):
    """Pointing accuracy of word-patch transport plans, with its chance level."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Word-patch pointing: whether the patch with a word's largest transport mass lies in the "
                        "box of the object the word names; with the chance level of a random patch.",
            citation="Kim et al., 2021, ViLT; Zhang et al., 2016, Top-down Neural Attention by Excitation Backprop.",
            inputs_description=__doc__,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                "references": datasets.Sequence(datasets.Value("float32"), length=4),
            }),
        )

    def _compute(self, predictions, references, patch_size=None, image_sizes=None):
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        if len(predictions) != len(references) or not predictions:
            raise ValueError(f"predictions and references must be non-empty and of one length, got "
                             f"{len(predictions)} and {len(references)}")
        if image_sizes is not None and len(image_sizes) != len(predictions):
            raise ValueError(f"image_sizes must have one (height, width) per entry, got {len(image_sizes)} for "
                             f"{len(predictions)}")
        hits, chances, shares = [], [], []
        for k, (plan, box) in enumerate(zip(predictions, references, strict=True)):
            plan = np.asarray(plan, dtype=np.float64)
            if plan.ndim != 2 or plan.size == 0:
                raise ValueError(f"predictions[{k}] must be a non-empty (GH, GW) grid, got shape {plan.shape}")
            x0, y0, x1, y1 = (float(v) for v in box)
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"references[{k}] must be a box (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got "
                                 f"{list(box)}")
            rows, columns = plan.shape
            height, width = image_sizes[k] if image_sizes is not None else (rows * patch_size, columns * patch_size)
            real_rows = min(rows, -(-int(height) // patch_size))  # top-left pixel inside the image
            real_columns = min(columns, -(-int(width) // patch_size))
            real = np.zeros(plan.shape, dtype=bool)
            real[:real_rows, :real_columns] = True
            inside = patch_centres_in_box(plan.shape, patch_size, (x0, y0, x1, y1))
            top = int(np.argmax(np.where(real, plan, -np.inf)))  # first maximum in row-major order
            hits.append(bool(inside.flat[top]))
            chances.append(float((inside & real).sum() / real.sum()))
            overlap = max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
            shares.append(overlap / (float(height) * float(width)))
        return {"pointing_accuracy": float(np.mean(hits)), "chance": float(np.mean(chances)),
                "box_area_share": float(np.mean(shares)), "num_words": len(hits)}
