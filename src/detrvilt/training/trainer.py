"""What DETR's and ViLT's `transformers.Trainer` runs share: the non-finite-loss check, the epoch callback, and
stopping on SIGTERM / SIGUSR1 with a checkpoint ([`train_until_stopped`])."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from .loop import batch_image_ids
from .preemption import StopRequest, TrainingStopped


def check_finite_loss(loss: torch.Tensor, step: int, labels=None) -> None:
    """Raise `FloatingPointError` naming `step` and the batch's image ids when `loss` is NaN or infinite."""
    if not torch.isfinite(loss.detach()).all():
        raise FloatingPointError(
            f"non-finite loss {loss.detach().float().tolist()} at step {step} on the batch with image ids "
            f"{batch_image_ids({'labels': labels})}; lower the learning rate, check these images' boxes, or train in "
            "fp32"
        )


class DatasetEpochCallback(TrainerCallback):
    """Calls `dataset.set_epoch(epoch)` at the start of every training epoch, so per-epoch augmentation draws change."""

    def __init__(self, dataset):
        if not callable(getattr(dataset, "set_epoch", None)):
            raise TypeError(f"dataset must have a set_epoch(epoch) method, got {type(dataset).__name__}")
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


class StopOnSignalCallback(TrainerCallback):
    """After the step in progress when a stop signal came (on any process): save a checkpoint and stop training.

    The processes agree through one all-reduce of the flag per step when `torch.distributed` is initialized, so that
    all of them stop after the same step even if only one was signalled."""

    def __init__(self, stop: StopRequest):
        self.stop = stop
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        requested = self.stop.requested
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(requested)], device=args.device)
            torch.distributed.all_reduce(flag)
            requested = bool(flag.item() > 0)
        if requested:
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control


def train_until_stopped(trainer, resume_from_checkpoint: str | bool | None = None):
    """`trainer.train(resume_from_checkpoint=...)` that, on SIGTERM or SIGUSR1, finishes the step in progress, saves
    the Trainer checkpoint of that step and raises [`TrainingStopped`] (exit status 75, "stopped, resumable").
    Returns what `trainer.train` returns otherwise."""
    with StopRequest() as stop:
        callback = StopOnSignalCallback(stop)
        trainer.add_callback(callback)
        try:
            result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        finally:
            trainer.remove_callback(callback)
    if callback.stopped_at is not None:
        checkpoint = f"{trainer.args.output_dir}/checkpoint-{callback.stopped_at}"
        stopped = TrainingStopped(callback.stopped_at, stop.signal_name or "a stop signal (on another process)",
                                  checkpoint)
        if trainer.is_world_process_zero():
            print(stopped.message, flush=True)
        raise stopped
    return result
