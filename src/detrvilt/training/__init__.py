"""Training DETR (and, through the model-agnostic Accelerate loop, ViLT): the paper's optimizer, `Trainer` wiring with
COCO mAP as `compute_metrics`, and an `accelerate` loop with exact resume and multi-process evaluation."""

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
from .trainer import DetrTrainer, check_finite_loss

__all__ = [
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
]
