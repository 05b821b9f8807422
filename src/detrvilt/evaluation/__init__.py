"""Evaluation metrics as `evaluate` modules that load offline from this package.

``load_metric(name)`` is ``evaluate.load`` on the metric's file inside the package (``coco_map.py`` for "coco_map").
"""

from pathlib import Path

import evaluate

_METRICS_DIR = Path(__file__).resolve().parent
# Every module file in this folder is a metric (`coco_map.py` -> "coco_map").
METRICS = tuple(sorted(p.stem for p in _METRICS_DIR.glob("*.py") if not p.stem.startswith("_")))


def metric_path(name: str) -> Path:
    """The file of metric `name`, for `evaluate.load(str(path))`."""
    if name not in METRICS:
        raise ValueError(f"name must be one of {METRICS}, got {name!r}")
    return _METRICS_DIR / f"{name}.py"


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """Load one of detrvilt's metrics (offline): an `evaluate` module with `add_batch` / `compute`."""
    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["METRICS", "load_metric", "metric_path"]
