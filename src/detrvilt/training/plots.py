"""The loss curve of a training run (matplotlib, headless); predictions and attention pictures: `detrvilt.viz`."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
