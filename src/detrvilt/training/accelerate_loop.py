"""A training and evaluation loop on `accelerate`, for any model whose `forward(**batch)` returns a `loss`.

Nothing in `train_loop` or `gather_eval_records` knows the model: DETR and ViLT train on the same loop. The
model-specific parts are passed in: the `eval_step` ([`detr_eval_step`] here; ViLT's `vilt_eval_step` and
`retrieval_eval_step` in `vilt_evaluation.py`), the `loss_step` and the batch description used in error messages
([`batch_image_ids`] for DETR, `batch_example_ids` for ViLT).

- Any number of processes (`accelerate launch`), mixed precision through the `Accelerator` (`bf16`, `fp16`, `no`).
- Gradient accumulation by hand: every optimizer step takes exactly `gradient_accumulation_steps` batches from an
  endless chain of epochs, so the number of batches consumed is a function of the step alone, which is what makes
  resuming exact.
- Checkpoints are `accelerator.save_state` folders `checkpoint-{step}` plus `loop_state.json` (step, losses). Resuming
  restores model, optimizer, scheduler and RNG states, re-seeds the epoch's shuffling ([`EpochShuffleSampler`]) and
  skips the batches already seen: with a deterministic data pipeline the losses continue exactly as without a stop.
- A non-finite loss stops every process with `FloatingPointError` naming the step and the batch (its image ids).
- Evaluation gathers per-image records across processes with `gather_for_metrics`, which drops the samples the
  distributed sampler repeated to even out the last batch; records carry `image_id` for a second check.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch.utils.data import Sampler
from tqdm.auto import tqdm

from .metrics import detection_records, eval_labels

LOOP_STATE_FILE = "loop_state.json"


class EpochShuffleSampler(Sampler[int]):
    """Indices `0..n-1`, shuffled by a generator seeded with `seed + epoch` (call `set_epoch` before each epoch), so
    the order of any epoch can be rebuilt after a restart."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True):
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def batch_image_ids(batch: Mapping) -> list:
    """The `image_id` of every image of a detection batch (`labels` list of dicts), for error messages; empty when the
    labels are not a list of dicts (e.g. a tensor)."""
    labels = batch.get("labels")
    if not isinstance(labels, (list, tuple)):
        return []
    ids = []
    for label in labels:
        value = label.get("image_id") if isinstance(label, Mapping) else None
        ids.append(int(torch.as_tensor(value).reshape(-1)[0]) if value is not None else None)
    return ids


def default_loss_step(model, batch: Mapping) -> tuple[torch.Tensor, dict]:
    """`model(**batch)` -> `(loss, logs)`; `logs` are the output's `loss_dict` entries without an auxiliary suffix."""
    outputs = model(**batch)
    loss_dict = outputs.get("loss_dict") if isinstance(outputs, Mapping) else None
    logs = {k: v.detach() for k, v in (loss_dict or {}).items() if not k.rsplit("_", 1)[-1].isdigit()}
    return outputs["loss"], logs


@dataclass
class LoopConfig:
    """Settings of [`train_loop`]."""

    max_steps: int = field(metadata={"help": "Number of optimizer steps to train for (in all)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    max_grad_norm: float | None = field(default=0.1, metadata={"help": "Clip the gradient norm (the paper: 0.1)."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every this many steps."})
    checkpointing_steps: int | None = field(default=None, metadata={"help": "Save a checkpoint every this many steps."})
    output_dir: str | None = field(default=None, metadata={"help": "Where checkpoints go."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "A checkpoint folder to resume from."})
    progress_bar: bool = field(default=True, metadata={"help": "Show a progress bar on the main process."})
    max_seconds: float | None = field(default=None, metadata={
        "help": "Stop after the step during which this many seconds of training have passed (a time budget)."})

    def __post_init__(self):
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}")
        if not isinstance(self.gradient_accumulation_steps, int) or self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be a positive integer, got "
                             f"{self.gradient_accumulation_steps!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm!r}")
        if self.checkpointing_steps is not None:
            if not isinstance(self.checkpointing_steps, int) or self.checkpointing_steps < 1:
                raise ValueError(f"checkpointing_steps must be a positive integer or None, got "
                                 f"{self.checkpointing_steps!r}")
            if self.output_dir is None:
                raise ValueError("checkpointing_steps needs output_dir (where to write the checkpoints)")


def _endless_batches(accelerator: Accelerator, dataloader, sampler, start_batch: int) -> Iterator:
    """Batches of consecutive epochs, starting `start_batch` batches in (epochs re-seeded, skipped batches unread)."""
    if len(dataloader) == 0:
        raise ValueError("the training dataloader is empty")
    epoch, skip = divmod(start_batch, len(dataloader))
    while True:
        loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        # accelerate's loaders re-apply their own epoch counter when iterated (a fresh skipping loader counts from 0):
        # set it on the loader that is iterated, then on the sampler and dataset themselves.
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if hasattr(getattr(dataloader, "dataset", None), "set_epoch"):
            dataloader.dataset.set_epoch(epoch)
        yield from loader
        epoch, skip = epoch + 1, 0


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, losses: Sequence[float]) -> str:
    """`accelerator.save_state` into `output_dir/checkpoint-{step}` plus the loop's own state. Returns the folder."""
    folder = os.path.join(output_dir, f"checkpoint-{step}")
    accelerator.save_state(folder)
    if accelerator.is_main_process:
        with open(os.path.join(folder, LOOP_STATE_FILE), "w") as handle:
            json.dump({"step": step, "losses": list(losses)}, handle)
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(accelerator: Accelerator, folder: str) -> tuple[int, list[float]]:
    """Restore a [`save_checkpoint`] folder; returns `(step, losses so far)`."""
    state_file = os.path.join(folder, LOOP_STATE_FILE)
    if not os.path.isfile(state_file):
        raise ValueError(f"resume_from_checkpoint={folder!r} is not a checkpoint folder (no {LOOP_STATE_FILE})")
    accelerator.load_state(folder)
    with open(state_file) as handle:
        state = json.load(handle)
    return int(state["step"]), [float(v) for v in state["losses"]]


def train_loop(
    accelerator: Accelerator,
    model,
    optimizer,
    train_dataloader,
    config: LoopConfig,
    scheduler=None,
    sampler=None,
    loss_step: Callable = default_loss_step,
    describe_batch: Callable[[Mapping], object] = batch_image_ids,
    on_log: Callable[[int, dict], None] | None = None,
) -> list[float]:
    """Train for `config.max_steps` optimizer steps; returns the loss of every step (mean over processes and batches).

    Args:
        accelerator, model, optimizer, train_dataloader, scheduler: already passed through `accelerator.prepare`.
        sampler: the dataloader's sampler when it has `set_epoch` (e.g. [`EpochShuffleSampler`]): re-seeded at
            every epoch, also when resuming. For an exact resume, give the DataLoader a `generator` of its own: a
            DataLoader draws a seed at every epoch, from torch's global generator otherwise, which would shift the
            dropout stream of a resumed run.
        loss_step (`Callable`): `(model, batch) -> (loss, logs)`, see [`default_loss_step`].
        describe_batch (`Callable`): names a batch in the non-finite-loss error (default: its image ids).
        on_log (`Callable`): called on the main process as `on_log(step, logs)` every `config.logging_steps`.
    """
    step, losses = 0, []
    if config.resume_from_checkpoint:
        step, losses = load_checkpoint(accelerator, config.resume_from_checkpoint)
        losses = losses[:step]
    batches = _endless_batches(accelerator, train_dataloader, sampler, step * config.gradient_accumulation_steps)
    model.train()
    start = time.perf_counter()
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress_bar and accelerator.is_main_process),
               desc="training")
    while step < config.max_steps:
        step_loss = torch.zeros((), device=accelerator.device)
        step_logs: dict[str, torch.Tensor] = {}
        for micro in range(config.gradient_accumulation_steps):
            batch = next(batches)
            last = micro == config.gradient_accumulation_steps - 1
            context = accelerator.no_sync(model) if not last else contextlib.nullcontext()
            with context:
                loss, logs = loss_step(model, batch)
                local_finite = bool(torch.isfinite(loss.detach()).all())
                flags = accelerator.gather(torch.tensor([float(local_finite)], device=accelerator.device))
                if flags.min() < 1:  # every process stops, not only the one that saw it
                    where = describe_batch(batch) if not local_finite else "none here (another process's batch)"
                    raise FloatingPointError(
                        f"non-finite loss at step {step + 1} (batch {micro + 1} of the step), image ids: {where}; "
                        "lower the learning rate, check these images' boxes, or train in fp32")
                accelerator.backward(loss / config.gradient_accumulation_steps)
            step_loss += loss.detach().float() / config.gradient_accumulation_steps
            for key, value in logs.items():
                step_logs[key] = step_logs.get(key, 0) + value.float() / config.gradient_accumulation_steps
        if config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        mean_loss = accelerator.reduce(step_loss, reduction="mean").item()
        losses.append(mean_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        if on_log is not None and (step % config.logging_steps == 0 or step == config.max_steps):
            logs = {k: accelerator.reduce(v, reduction="mean").item() for k, v in step_logs.items()}
            if accelerator.is_main_process:
                on_log(step, {"loss": mean_loss, "lr": optimizer.param_groups[0]["lr"], **logs})
        if config.checkpointing_steps and step % config.checkpointing_steps == 0:
            save_checkpoint(accelerator, config.output_dir, step, losses)
        if config.max_seconds is not None:
            # Every process must stop at the same step: the main process's clock decides.
            out_of_time = torch.tensor([float(time.perf_counter() - start > config.max_seconds)],
                                       device=accelerator.device)
            if accelerator.reduce(out_of_time, reduction="max").item() > 0:
                accelerator.print(f"time budget of {config.max_seconds:.0f} s reached after step {step}")
                break
    bar.close()
    return losses


def gather_eval_records(accelerator: Accelerator, model, dataloader, eval_step: Callable, progress_bar: bool = True
                        ) -> list:
    """Run `eval_step(model, batch) -> list of per-example records` over a prepared dataloader on every process and
    return all records of all processes (on every process), each example once (`gather_for_metrics`)."""
    model.eval()
    records = []
    with torch.no_grad():
        for batch in tqdm(dataloader, desc="evaluating",
                          disable=not (progress_bar and accelerator.is_main_process)):
            batch_records = eval_step(model, batch)
            records += accelerator.gather_for_metrics(batch_records, use_gather_object=True)
    return records


def detr_eval_step(image_processor, threshold: float = 0.0, top_k: int | None = None) -> Callable:
    """An `eval_step` for DETR: per-image records (`image_id`, post-processed prediction, reference) in
    original-image pixels, see [`detection_records`]."""

    def step(model, batch):
        outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch.get("pixel_mask"))
        labels = [{k: v.cpu() for k, v in label.items()} for label in eval_labels(batch["labels"])]
        return detection_records(image_processor, outputs["logits"].float().cpu(), outputs["pred_boxes"].float().cpu(),
                                 labels, threshold, top_k)

    return step
