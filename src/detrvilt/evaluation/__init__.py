"""Evaluation metrics as `evaluate` modules that load offline from this package.

``load_metric("coco_map")`` is ``evaluate.load`` on the metric's file inside the package.
"""

from pathlib import Path

import evaluate

_METRICS_DIR = Path(__file__).resolve().parent
METRICS = ("coco_map",)


def metric_path(name: str) -> Path:
    """The file of metric `name`, for `evaluate.load(str(path))`."""
    if name not in METRICS:
        raise ValueError(f"name must be one of {METRICS}, got {name!r}")
    return _METRICS_DIR / f"{name}.py"


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """Load one of detrvilt's metrics (offline): an `evaluate` module with `add_batch` / `compute`."""
    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["METRICS", "load_metric", "metric_path"]
