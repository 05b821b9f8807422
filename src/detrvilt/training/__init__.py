"""Training DETR and ViLT: the papers' optimizers, `Trainer` wiring with their metrics as `compute_metrics`, and one
model-agnostic `accelerate` loop with exact resume and multi-process evaluation, shared by both models.

Shared pieces sit at this level (`loop.py`, `arguments.py`, `recipes.py`, `trainer.py`, `plots.py`); each model's
parts sit in `detr/` and `vilt/` under the same file names (`arguments.py`, `recipes.py`, `trainer.py`,
`optimization.py`, `metrics.py`, `demo.py`).
"""

from .arguments import MIXED_PRECISION, LoopArguments
from .checkpoints import latest_checkpoint, load_checkpoint, rotate_checkpoints, save_checkpoint
from .detr.metrics import (
    DetrCocoMetrics,
    coco_map_from_records,
    detection_records,
    detr_eval_step,
    eval_labels,
    reference_from_label,
)
from .detr.optimization import (
    PAPER_BACKBONE_LEARNING_RATE,
    PAPER_LEARNING_RATE,
    PAPER_MAX_GRAD_NORM,
    PAPER_WEIGHT_DECAY,
    create_detr_optimizer,
    create_step_scheduler,
    detr_parameter_groups,
    step_decay_lambda,
)
from .detr.trainer import DetrTrainer
from .loop import EpochShuffleSampler, LoopConfig, batch_image_ids, default_loss_step, gather_eval_records, train_loop
from .preemption import RESUMABLE_EXIT_CODE, TrainingStopped
from .recipes import make_accelerator, save_trained
from .trainer import DatasetEpochCallback, check_finite_loss, train_until_stopped
from .vilt.metrics import ViltMetrics
from .vilt.optimization import create_vilt_optimizer, create_vilt_scheduler, vilt_parameter_groups
from .vilt.recipes import run_vilt_accelerate_training, run_vilt_trainer_training
from .vilt.trainer import ViltTrainer, retrieval_recall


def __getattr__(name):
    # The ViLT demo is a `python -m` entry point: imported on first use, so that running it does not import it twice.
    if name in ("ViltDemoArguments", "run_vilt_demo"):
        from .vilt import demo

        return getattr(demo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DatasetEpochCallback",
    "DetrCocoMetrics",
    "DetrTrainer",
    "EpochShuffleSampler",
    "LoopArguments",
    "LoopConfig",
    "MIXED_PRECISION",
    "PAPER_BACKBONE_LEARNING_RATE",
    "PAPER_LEARNING_RATE",
    "PAPER_MAX_GRAD_NORM",
    "PAPER_WEIGHT_DECAY",
    "RESUMABLE_EXIT_CODE",
    "TrainingStopped",
    "batch_image_ids",
    "check_finite_loss",
    "coco_map_from_records",
    "create_detr_optimizer",
    "create_step_scheduler",
    "default_loss_step",
    "detection_records",
    "detr_eval_step",
    "detr_parameter_groups",
    "eval_labels",
    "gather_eval_records",
    "latest_checkpoint",
    "load_checkpoint",
    "reference_from_label",
    "save_trained",
    "rotate_checkpoints",
    "save_checkpoint",
    "step_decay_lambda",
    "train_until_stopped",
    "train_loop",
    "ViltDemoArguments",
    "ViltMetrics",
    "ViltTrainer",
    "create_vilt_optimizer",
    "create_vilt_scheduler",
    "make_accelerator",
    "retrieval_recall",
    "run_vilt_accelerate_training",
    "run_vilt_demo",
    "run_vilt_trainer_training",
    "vilt_parameter_groups",
]
