"""`transformers.Trainer` for ViLT: the official optimizer groups, task-aware evaluation outputs, and retrieval
recall from a full score matrix.

``ViltTrainer(model, args, train_dataset=..., eval_dataset=..., data_collator=..., compute_metrics=ViltMetrics(task),
task="vqa")``, with `args` a [`ViltTrainingArguments`] (official defaults: lr 1e-4, weight decay 0.01, betas
0.9/0.98, eps 1e-8, linear warmup over 10% then linear decay to 0, head learning-rate multiplier).

What differs from the plain Trainer, and why:

- the optimizer is AdamW over [`vilt_parameter_groups`]: no weight decay on biases and LayerNorms, the task head
  (`classifier`) at `head_lr_multiplier` times the learning rate (the scheduler scales every group alike);
- evaluation keeps only what the metrics need (VQA/NLVR2: `logits`; pretraining: the MLM argmax ids and the ITM
  logits, and both label tensors `labels` / `itm_labels`) instead of every output (the pretraining model also returns
  `(B, T, vocab)` MLM logits, pooled outputs and patch indices);
- retrieval: `evaluate()` adds recall@1/5/10 both ways over `retrieval_eval_dataset`, every image scored against
  every caption by the cross-encoder (the loss on 1 positive + K negatives stays Trainer's `eval_loss`);
- a non-finite training loss raises `FloatingPointError` naming the step (`check_finite_loss`, shared with DETR).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from ..trainer import check_finite_loss
from .metrics import (
    TASKS,
    ViltImageCollator,
    caption_table,
    retrieval_eval_step,
    retrieval_recall_from_records,
    tokenize_texts,
)
from .optimization import VILT_HEAD_LR_MULTIPLIER, vilt_parameter_groups


class ViltTrainer(Trainer):
    """Trainer for the ViLT models (see the module docstring).

    Args:
        task (`str`): `"pretrain"`, `"vqa"`, `"nlvr2"` or `"retrieval"`.
        head_lr_multiplier (`float`, *optional*): learning-rate factor of the task head; defaults to
            `args.head_lr_multiplier` when `args` has it, else 10.
        retrieval_eval_dataset (*optional*): for `task="retrieval"`, a dataset with `image` and `captions` (or
            `text`) on which `evaluate()` computes recall@K over the full image x caption matrix.
        processor (*optional*): the [`DetrviltViltProcessor`] for the retrieval evaluation.
        retrieval_text_batch_size (`int`, defaults to 64): captions scored per forward pass and image.
        eval_data_collator (*optional*): the collator of evaluation batches (e.g. without augmentation and with
            fixed masking/negatives); `data_collator` when not given.
        Other arguments: those of `transformers.Trainer`.
    """

    def __init__(self, *args, task: str, head_lr_multiplier: float | None = None, retrieval_eval_dataset=None,
                 processor=None, retrieval_text_batch_size: int = 64, eval_data_collator=None, **kwargs):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        super().__init__(*args, **kwargs)
        if self.args.remove_unused_columns:
            raise ValueError("ViltTrainer needs TrainingArguments(remove_unused_columns=False): the collators read "
                             "raw images and texts")
        if retrieval_eval_dataset is not None and (task != "retrieval" or processor is None):
            raise ValueError("retrieval_eval_dataset needs task='retrieval' and a processor")
        self.task = task
        default = getattr(self.args, "head_lr_multiplier", VILT_HEAD_LR_MULTIPLIER)
        self.head_lr_multiplier = default if head_lr_multiplier is None else head_lr_multiplier
        self.retrieval_eval_dataset = retrieval_eval_dataset
        self.processor = processor
        self.retrieval_text_batch_size = retrieval_text_batch_size
        self.eval_data_collator = eval_data_collator
        self.model_accepts_loss_kwargs = False
        if task == "pretrain" and self.args.label_names is None:
            self.label_names = ["labels", "itm_labels"]

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = model if model is not None else self.model
            groups = vilt_parameter_groups(model, self.args.learning_rate, self.args.weight_decay,
                                           self.head_lr_multiplier)
            self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate,
                                               betas=(self.args.adam_beta1, self.args.adam_beta2),
                                               eps=self.args.adam_epsilon)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "example_index"}
        if self.task == "pretrain" and model.training and "labels" in inputs:
            inputs["mlm_masked_only"] = True  # the same loss; the vocabulary projection only where it counts
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
        if model.training:
            check_finite_loss(loss, self.state.global_step)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        inputs = {k: v for k, v in inputs.items() if k != "example_index"}
        label_names = self.label_names if self.task == "pretrain" else ["labels"]
        has_labels = all(inputs.get(name) is not None for name in label_names)
        with torch.no_grad(), self.compute_loss_context_manager():
            if has_labels:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach().mean()
            else:
                loss, outputs = None, model(**inputs)
        if prediction_loss_only:
            return loss, None, None
        if self.task == "pretrain":
            mlm = outputs["logits"]
            predictions = (mlm.argmax(-1) if mlm is not None else None, outputs["itm_logits"])
            labels = tuple(inputs.get(name) for name in label_names) if has_labels else None
        else:
            predictions = outputs["logits"].detach()
            labels = inputs.get("labels")
        return loss, predictions, labels

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            train_collator = self.data_collator
            if self.eval_data_collator is not None:
                self.data_collator = self.eval_data_collator
            try:
                metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            finally:
                self.data_collator = train_collator
        if self.retrieval_eval_dataset is not None:
            recall = retrieval_recall(self.model, self.processor, self.retrieval_eval_dataset,
                                      batch_size=self.args.per_device_eval_batch_size,
                                      text_batch_size=self.retrieval_text_batch_size)
            recall = {f"{metric_key_prefix}_{k}": v for k, v in recall.items()}
            self.log(recall)
            metrics.update(recall)
        return metrics


def retrieval_recall(model, processor, dataset, batch_size: int = 8, text_batch_size: int = 64) -> dict:
    """Recall@1/5/10 both ways of `model` on `dataset` (`image`, `captions` or `text`) in this process: every image
    against every caption, scored in batches of `batch_size` images x `text_batch_size` captions."""
    from ...data.vilt.collators import IndexedExamples

    texts, texts_of_image = caption_table(dataset)
    step = retrieval_eval_step(tokenize_texts(processor, texts), text_batch_size)
    loader = DataLoader(IndexedExamples(dataset.select_columns(["image"]) if hasattr(dataset, "select_columns")
                                        else dataset), batch_size=batch_size, collate_fn=ViltImageCollator(processor))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    records = []
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            records += step(model, batch)
    model.train(was_training)
    return retrieval_recall_from_records(records, texts_of_image)
