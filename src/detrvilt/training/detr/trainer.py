"""`transformers.Trainer` for DETR: the paper's optimizer groups and step decay, list-of-dict labels, COCO mAP.

``DetrTrainer(model, args, train_dataset=..., eval_dataset=..., data_collator=DetrDataCollator(),
compute_metrics=DetrCocoMetrics(processor), backbone_learning_rate=1e-5, lr_drop_step=...)``

What differs from the plain Trainer, and why:

- the optimizer is AdamW over two groups (backbone at `backbone_learning_rate`, the rest at `args.learning_rate`),
  and with `lr_drop_step` the schedule is the paper's step decay (after an optional `args.warmup_steps`);
- DETR's loss normalizes itself (by the number of boxes, summed over processes), so Trainer's token counting
  (`num_items_in_batch`) is switched off and the loss is divided by the accumulation steps in both cases: through the
  model's own loss and through `compute_loss_func=DetrLoss.from_config(config)` the loss is the same;
- evaluation returns `(logits, pred_boxes)` and the labels packed into batch-first tensors (`pack_labels`), batch by
  batch
  (`eval_do_concat_batches=False` is required: images have different numbers of objects);
- a non-finite loss raises `FloatingPointError` naming the step and the batch's image ids;
- a training dataset with `set_epoch` (the in-memory set's flips) gets it at every epoch ([`DatasetEpochCallback`]):
  accelerate's loader forwards the epoch to the dataset only when its sampler cannot take it.
"""

from __future__ import annotations

import torch
from transformers import Trainer

from ..trainer import DatasetEpochCallback, check_finite_loss
from .metrics import pack_labels
from .optimization import PAPER_BACKBONE_LEARNING_RATE, create_step_scheduler, detr_parameter_groups


class DetrTrainer(Trainer):
    """Trainer for [`DetrForObjectDetection`] (see the module docstring).

    Args:
        backbone_learning_rate (`float`, defaults to 1e-5): learning rate of the CNN backbone (the paper's; the rest
            uses `args.learning_rate`, whose paper value is 1e-4).
        lr_drop_step (`int`, *optional*): multiply the learning rate by `lr_drop_gamma` after this many optimizer
            steps (the paper's step decay). Without it, `args.lr_scheduler_type` decides.
        lr_drop_gamma (`float`, defaults to 0.1): the factor of the step decay.
        Other arguments: those of `transformers.Trainer`.
    """

    # The loss is a mean over the batch's boxes: Trainer must divide it by the accumulation steps itself.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, backbone_learning_rate: float = PAPER_BACKBONE_LEARNING_RATE,
                 lr_drop_step: int | None = None, lr_drop_gamma: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        if backbone_learning_rate < 0:
            raise ValueError(f"backbone_learning_rate must be >= 0, got {backbone_learning_rate!r}")
        if self.args.eval_do_concat_batches:
            raise ValueError("DetrTrainer needs TrainingArguments(eval_do_concat_batches=False): each image has its "
                             "own number of objects, so label batches cannot be concatenated")
        if self.args.remove_unused_columns:
            raise ValueError("DetrTrainer needs TrainingArguments(remove_unused_columns=False): the model's inputs "
                             "are made by the dataset's transform, not stored as columns")
        self.backbone_learning_rate = backbone_learning_rate
        self.lr_drop_step = lr_drop_step
        self.lr_drop_gamma = lr_drop_gamma
        self.model_accepts_loss_kwargs = False
        if callable(getattr(self.train_dataset, "set_epoch", None)):
            self.add_callback(DatasetEpochCallback(self.train_dataset))

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = model if model is not None else self.model
            groups = detr_parameter_groups(model, self.args.learning_rate, self.backbone_learning_rate,
                                           self.args.weight_decay)
            self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate,
                                               betas=(self.args.adam_beta1, self.args.adam_beta2),
                                               eps=self.args.adam_epsilon, fused=True)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.lr_drop_step is not None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            self.lr_scheduler = create_step_scheduler(optimizer, self.lr_drop_step,
                                                      self.args.get_warmup_steps(num_training_steps),
                                                      self.lr_drop_gamma)
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_num_items_in_batch(self, batch_samples, device):
        return None  # DETR normalizes by its own box count, summed over processes (see DetrLoss)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        if self.compute_loss_func is not None:
            # Trainer calls the model without labels and hands its outputs to the loss: in evaluation the model
            # would leave out the decoder layers' outputs, which the auxiliary losses need.
            inputs = {**inputs, "output_auxiliary_outputs": True}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=None)
        if model.training:
            check_finite_loss(loss, self.state.global_step, labels)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            if labels is not None:
                loss, outputs = self.compute_loss(model, dict(inputs), return_outputs=True)
                loss = loss.detach().mean()
            else:
                loss, outputs = None, model(**inputs)
        if prediction_loss_only:
            return loss, None, None
        predictions = (outputs["logits"].detach(), outputs["pred_boxes"].detach())
        return loss, predictions, None if labels is None else pack_labels(labels)
