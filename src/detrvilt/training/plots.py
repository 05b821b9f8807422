"""Pictures of a training run (matplotlib, headless): the loss curve and predictions over validation images."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_loss_curve(log: Sequence[dict], path: str, title: str = "DETR training loss") -> None:
    """`log`: dicts with `step`, `loss` and optionally `loss_ce`, `loss_bbox`, `loss_giou` (final decoder layer)."""
    if not log:
        raise ValueError("log is empty: nothing to plot")
    steps = [entry["step"] for entry in log]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(steps, [entry["loss"] for entry in log], label="total (all decoder layers, weighted)")
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    for key in ("loss_ce", "loss_bbox", "loss_giou"):
        if key in log[0]:
            axes[1].plot(steps, [entry[key] for entry in log], label=key)
    axes[1].set_xlabel("optimizer step")
    axes[1].set_title("last decoder layer")
    axes[1].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_predictions(images: Sequence, detections: Sequence[dict], references: Sequence[dict], id2label: dict,
                     path: str, threshold: float = 0.5, columns: int = 4) -> None:
    """A grid of images with predicted boxes (solid, labelled with class and score) and ground truth (dashed).

    Args:
        images: PIL images or `(H, W, 3)` arrays, in original pixels.
        detections: per image `boxes` (absolute xyxy), `scores`, `labels`.
        references: per image `boxes` (absolute xyxy) and `labels`.
    """
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, detection, reference in zip(axes.flat, images, detections, references):
        axis.imshow(np.asarray(image))
        for box, label in zip(reference["boxes"], reference["labels"]):
            x0, y0, x1, y1 = box
            axis.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", linewidth=1,
                                         edgecolor="white"))
        for box, score, label in zip(detection["boxes"], detection["scores"], detection["labels"]):
            if score < threshold:
                continue
            x0, y0, x1, y1 = box
            colour = colours(int(label) % 10)
            axis.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linewidth=1.5, edgecolor=colour))
            axis.text(x0, y0, f"{id2label.get(int(label), label)} {score:.2f}", fontsize=7, color="black",
                      bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})
    figure.suptitle(f"predictions (solid, score > {threshold}) and ground truth (dashed white)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
