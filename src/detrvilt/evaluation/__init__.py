"""Evaluation metrics as `evaluate` modules that load offline from this package.

``load_metric(name)`` is ``evaluate.load`` on the metric's file inside the package: DETR's metrics live in `detr/`
(``detr/coco_map.py`` for "coco_map", ``panoptic_quality``), ViLT's in `vilt/` (``vqa_score``, ``nlvr2_accuracy``,
``retrieval_recall``, ``mlm_accuracy``, ``itm_accuracy``). Metric names are unique across the two folders.
"""

from pathlib import Path

import evaluate

_METRICS_DIR = Path(__file__).resolve().parent
# Every module file in the model folders is a metric (`detr/coco_map.py` -> "coco_map").
_METRIC_FILES = {p.stem: p for folder in ("detr", "vilt") for p in (_METRICS_DIR / folder).glob("*.py")
                 if not p.stem.startswith("_")}
METRICS = tuple(sorted(_METRIC_FILES))


def metric_path(name: str) -> Path:
    """The file of metric `name`, for `evaluate.load(str(path))`."""
    if name not in METRICS:
        raise ValueError(f"name must be one of {METRICS}, got {name!r}")
    return _METRIC_FILES[name]


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """Load one of detrvilt's metrics (offline): an `evaluate` module with `add_batch` / `compute`."""
    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["METRICS", "load_metric", "metric_path"]
