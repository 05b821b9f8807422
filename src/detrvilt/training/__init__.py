"""Training DETR and ViLT: the papers' optimizers, `Trainer` wiring with their metrics as `compute_metrics`, and one
model-agnostic `accelerate` loop with exact resume and multi-process evaluation, shared by both models."""

from .accelerate_loop import (
    EpochShuffleSampler,
    LoopConfig,
    batch_image_ids,
    default_loss_step,
    detr_eval_step,
    gather_eval_records,
    load_checkpoint,
    save_checkpoint,
    train_loop,
)
from .metrics import DetrCocoMetrics, coco_map_from_records, detection_records, eval_labels, reference_from_label
from .optimization import (
    PAPER_BACKBONE_LEARNING_RATE,
    PAPER_LEARNING_RATE,
    PAPER_MAX_GRAD_NORM,
    PAPER_WEIGHT_DECAY,
    create_detr_optimizer,
    create_step_scheduler,
    detr_parameter_groups,
    step_decay_lambda,
)
from .recipes import make_accelerator
from .trainer import DatasetEpochCallback, DetrTrainer, check_finite_loss
from .vilt_demo import ViltDemoArguments, run_vilt_demo
from .vilt_evaluation import ViltMetrics
from .vilt_optimization import create_vilt_optimizer, create_vilt_scheduler, vilt_parameter_groups
from .vilt_recipes import run_vilt_accelerate_training, run_vilt_trainer_training
from .vilt_trainer import ViltTrainer, retrieval_recall

__all__ = [
    "DatasetEpochCallback",
    "DetrCocoMetrics",
    "DetrTrainer",
    "EpochShuffleSampler",
    "LoopConfig",
    "PAPER_BACKBONE_LEARNING_RATE",
    "PAPER_LEARNING_RATE",
    "PAPER_MAX_GRAD_NORM",
    "PAPER_WEIGHT_DECAY",
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
    "load_checkpoint",
    "reference_from_label",
    "save_checkpoint",
    "step_decay_lambda",
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
