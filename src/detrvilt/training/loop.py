"""A training and evaluation loop on `accelerate`, for any model whose `forward(**batch)` returns a `loss`.

Nothing in `train_loop` or `gather_eval_records` knows the model: DETR and ViLT train on the same loop. The
model-specific parts are passed in: the `eval_step` (DETR's `detr_eval_step` in `detr/metrics.py`; ViLT's
`vilt_eval_step` and `retrieval_eval_step` in `vilt/metrics.py`), the `loss_step` and the batch description used in
error messages ([`batch_image_ids`], the default, for DETR; `batch_example_ids` for ViLT).

- Any number of processes (`accelerate launch`), mixed precision through the `Accelerator` (`bf16`, `fp16`, `no`).
- Gradient accumulation by hand: every optimizer step takes exactly `gradient_accumulation_steps` batches from an
  endless chain of epochs, so the number of batches consumed is a function of the step alone, which is what makes
  resuming exact.
- Checkpoints are `accelerator.save_state` folders `checkpoint-{step}` plus `loop_state.json` (step, losses), written
  atomically (`checkpoints.py`: a killed save never leaves a folder that looks complete), at most `save_total_limit`
  kept. Resuming (from a folder, or `"latest"`: the newest complete one) restores model, optimizer, scheduler and RNG
  states, re-seeds the epoch's shuffling ([`EpochShuffleSampler`]) and skips the batches already seen: with a data
  pipeline whose random draws depend on (seed, epoch, example) only, the run continues exactly as without a stop.
- SIGTERM / SIGUSR1 (`preemption.py`): the current step finishes, every process saves the checkpoint of that step, and
  the loop raises `TrainingStopped` (exit status 75, "stopped, resumable").
- A non-finite loss stops every process with `FloatingPointError` naming the step and the batch (its image ids).
- Evaluation gathers per-image records across processes with `gather_for_metrics`, which drops the samples the
  distributed sampler repeated to even out the last batch; records carry `image_id` for a second check.
- Streaming loaders (a `StatefulDataLoader` over an iterable dataset, `detrvilt.data.streaming.stream_loader`) are
  read as they are, not through `accelerator.prepare` (their stream is already split across processes): an epoch
  ends when the process's share is exhausted, batches are moved to the device here, and each checkpoint holds every
  process's stream position (`stream_positions/`), from which a resume continues exactly (also inside a shuffle
  block: see `data/streaming.py`).
- Sharded models (`training/sharding.py`): FSDP2 (accelerate's, or ours on CPU processes, whose model and optimizer
  go into the checkpoint as `torch.distributed.checkpoint` shards) and DeepSpeed (which accumulates, clips and steps
  in its engine: the loop marks each micro-batch's accumulation boundary).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.data_loader import DataLoaderDispatcher, DataLoaderShard
from accelerate.utils import DistributedType, send_to_device
from torch.utils.data import Sampler
from tqdm.auto import tqdm

from .checkpoints import load_checkpoint, read_process_state, resolve_resume, save_checkpoint, write_process_state
from .preemption import StopRequest, TrainingStopped
from .sharding import load_sharded_state, no_sync, save_sharded_state, uses_cpu_fsdp

STREAM_POSITIONS = "stream_positions"
logger = logging.getLogger(__name__)


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


def batch_size(batch: Mapping) -> int:
    """Examples in a batch: the first dimension of `pixel_values` (or of `input_ids`, or of the first tensor)."""
    for key in ("pixel_values", "input_ids"):
        if isinstance(batch.get(key), torch.Tensor):
            return int(batch[key].shape[0])
    first = next((value for value in batch.values() if isinstance(value, torch.Tensor) and value.ndim), None)
    return int(first.shape[0]) if first is not None else 0


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
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "A checkpoint folder to resume from, or 'latest': the newest complete one in output_dir (a fresh "
                "start when there is none)."})
    save_total_limit: int | None = field(default=None, metadata={
        "help": "Keep at most this many checkpoints (the oldest are removed, never the newest)."})
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
        if self.save_total_limit is not None and (not isinstance(self.save_total_limit, int)
                                                  or self.save_total_limit < 1):
            raise ValueError(f"save_total_limit must be a positive integer or None, got {self.save_total_limit!r}")
        if self.resume_from_checkpoint == "latest" and self.output_dir is None:
            raise ValueError("resume_from_checkpoint='latest' needs output_dir (where to look for checkpoints)")


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


def is_stream_loader(dataloader) -> bool:
    """Whether `dataloader` reads an iterable dataset (a stream) instead of indices of a map-style one."""
    return isinstance(getattr(dataloader, "dataset", None), torch.utils.data.IterableDataset)


class StreamBatches:
    """This process's batches of consecutive epochs of a streaming loader, moved to the device.

    An epoch ends when the process's share of the stream is exhausted (no `len`); the dataset's `set_epoch` is called
    before each. [`position`] is what a checkpoint stores (epoch, batches and examples read in it, the loader's
    `state_dict`: the stream position of the process and of each of its workers); `start`, such a position, continues
    from there. `epoch_examples` counts the examples of every finished epoch of this process (logged at each epoch's
    end), so that a share that ends early or a dropped batch shows.
    """

    def __init__(self, accelerator: Accelerator, dataloader, start: dict | None = None):
        self.accelerator = accelerator
        self.dataloader = dataloader
        self.epoch, self.batches, self.examples = 0, 0, 0
        self.epoch_examples: dict[int, int] = {}
        if start is not None:
            self.epoch, self.batches = int(start["epoch"]), int(start["batches"])
            self.examples = int(start.get("examples", 0))
            self._set_epoch(self.epoch)
            dataloader.load_state_dict(start["loader"])
        self._iterator = self._read(resumed=start is not None)

    def _set_epoch(self, epoch: int) -> None:
        for holder in (self.dataloader, getattr(self.dataloader, "dataset", None)):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)

    def _read(self, resumed: bool) -> Iterator:
        while True:
            self._set_epoch(self.epoch)
            read = 0
            for batch in self.dataloader:
                read += 1
                self.batches += 1
                self.examples += batch_size(batch)
                yield send_to_device(batch, self.accelerator.device)
            if read == 0 and not resumed:  # a resume may start at the very end of an epoch; a fresh epoch may not
                raise ValueError(f"process {self.accelerator.process_index}: the stream gave no batch in epoch "
                                 f"{self.epoch} (fewer examples than a batch, or fewer shards than processes and "
                                 "workers with drop_last)")
            resumed = False
            self.epoch_examples[self.epoch] = self.examples
            logger.info("process %d: epoch %d of the stream ended after %d examples in %d batches",
                        self.accelerator.process_index, self.epoch, self.examples, self.batches)
            self.epoch, self.batches, self.examples = self.epoch + 1, 0, 0

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iterator)

    def position(self) -> dict:
        """Where this process is: `{"epoch", "batches", "examples", "loader"}`."""
        if not hasattr(self.dataloader, "state_dict"):
            raise TypeError(f"checkpointing a stream needs a loader with state_dict() (a torchdata "
                            f"StatefulDataLoader, see detrvilt.data.streaming.stream_loader), got "
                            f"{type(self.dataloader).__name__}")
        return {"epoch": self.epoch, "batches": self.batches, "examples": self.examples,
                "loader": self.dataloader.state_dict()}


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
            A streaming loader ([`is_stream_loader`]: e.g. `detrvilt.data.streaming.stream_loader`) is not
            prepared: its stream is split across processes already; see [`StreamBatches`].
        sampler: the dataloader's sampler when it has `set_epoch` (e.g. [`EpochShuffleSampler`]): re-seeded at
            every epoch, also when resuming. For an exact resume, give the DataLoader a `generator` of its own: a
            DataLoader draws a seed at every epoch, from torch's global generator otherwise, which would shift the
            dropout stream of a resumed run.
        loss_step (`Callable`): `(model, batch) -> (loss, logs)`, see [`default_loss_step`].
        describe_batch (`Callable`): names a batch in the non-finite-loss error (default: its image ids).
        on_log (`Callable`): called on the main process as `on_log(step, logs)` every `config.logging_steps`.

    Raises:
        `TrainingStopped` (a `SystemExit` with status 75) after SIGTERM or SIGUSR1, once the step in progress is done
        and its checkpoint saved (when `config.output_dir` is set).
    """
    streaming = is_stream_loader(train_dataloader)
    if streaming and isinstance(train_dataloader, (DataLoaderShard, DataLoaderDispatcher)):
        raise ValueError("the streaming loader went through accelerator.prepare, which keeps one batch in "
                         "num_processes of each process's stream: pass the stream_loader as it is (its stream is "
                         "split across processes by distribute_stream already)")
    if (accelerator.distributed_type == DistributedType.DEEPSPEED
            and accelerator.gradient_accumulation_steps != config.gradient_accumulation_steps):
        raise ValueError(f"DeepSpeed accumulates {accelerator.gradient_accumulation_steps} batches per step, the loop "
                         f"{config.gradient_accumulation_steps}: prepare with training.sharding.prepare_training")
    cpu_fsdp = uses_cpu_fsdp(accelerator, model)
    step, losses, stream_start = 0, [], None
    resume = resolve_resume(config.resume_from_checkpoint, config.output_dir)
    if resume:
        step, losses = load_checkpoint(
            accelerator, resume, load_extra=(lambda folder: load_sharded_state(model, optimizer, folder)) if cpu_fsdp
            else None)
        losses = losses[:step]
        if streaming:
            stream_start = read_process_state(resume, STREAM_POSITIONS, accelerator.process_index,
                                              accelerator.num_processes)
        accelerator.print(f"resumed from {resume} at step {step}")
    elif config.resume_from_checkpoint:
        accelerator.print(f"no complete checkpoint in {config.output_dir}: starting from step 0")
    if streaming:
        batches = StreamBatches(accelerator, train_dataloader, stream_start)
    else:
        batches = _endless_batches(accelerator, train_dataloader, sampler, step * config.gradient_accumulation_steps)

    def save_extra(folder: str) -> None:
        if streaming:
            write_process_state(folder, STREAM_POSITIONS, accelerator.process_index, accelerator.num_processes,
                                batches.position())
        if cpu_fsdp:
            save_sharded_state(model, optimizer, folder)

    with StopRequest() as stop:
        _train_steps(accelerator, model, optimizer, batches, config, scheduler, loss_step, describe_batch, on_log,
                     step, losses, stop, save_extra)
    return losses


def _train_steps(accelerator, model, optimizer, batches, config, scheduler, loss_step, describe_batch, on_log, step,
                 losses, stop: StopRequest, save_extra) -> None:
    """The steps of [`train_loop`] from `step` on, appending to `losses`."""
    # DeepSpeed accumulates, scales the loss by 1/accumulation and steps inside `backward` at the boundary we mark.
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    model.train()
    start = last_log = time.perf_counter()
    examples_since_log = 0.0
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress_bar and accelerator.is_main_process),
               desc="training")
    while step < config.max_steps:
        step_loss = torch.zeros((), device=accelerator.device)
        step_logs: dict[str, torch.Tensor] = {}
        step_examples = 0
        for micro in range(config.gradient_accumulation_steps):
            batch = next(batches)
            step_examples += batch_size(batch)
            last = micro == config.gradient_accumulation_steps - 1
            if deepspeed:
                accelerator.sync_gradients = last
            context = no_sync(accelerator, model) if not (last or deepspeed) else contextlib.nullcontext()
            with context:
                loss, logs = loss_step(model, batch)
                local_finite = bool(torch.isfinite(loss.detach()).all())
                flags = accelerator.gather(torch.tensor([float(local_finite)], device=accelerator.device))
                if flags.min() < 1:  # every process stops, not only the one that saw it
                    where = describe_batch(batch) if not local_finite else "none here (another process's batch)"
                    raise FloatingPointError(
                        f"non-finite loss at step {step + 1} (batch {micro + 1} of the step), image ids: {where}; "
                        "lower the learning rate, check these images' boxes, or train in fp32")
                accelerator.backward(loss if deepspeed else loss / config.gradient_accumulation_steps)
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
        # One reduction per step: the loss, whether any process is out of time or was told to stop (so that every
        # process stops after the same step), and the examples of the step.
        out_of_time = config.max_seconds is not None and time.perf_counter() - start > config.max_seconds
        reduced = accelerator.reduce(torch.stack([
            step_loss, step_loss.new_tensor(float(out_of_time)), step_loss.new_tensor(float(stop.requested)),
            step_loss.new_tensor(float(step_examples))]), reduction="sum").tolist()
        mean_loss = reduced[0] / accelerator.num_processes
        examples_since_log += reduced[3]
        losses.append(mean_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        if step % config.logging_steps == 0 or step == config.max_steps:
            logs = {k: accelerator.reduce(v, reduction="mean").item() for k, v in step_logs.items()}
            now = time.perf_counter()
            throughput = examples_since_log / max(now - last_log, 1e-9)
            last_log, examples_since_log = now, 0.0
            learning_rate = optimizer.param_groups[0]["lr"]
            # Experiment trackers (accelerate's `log_with`) get transformers.Trainer's names for the same numbers.
            accelerator.log({"loss": mean_loss, "learning_rate": learning_rate, **logs,
                             "train_samples_per_second": throughput}, step=step)
            if on_log is not None and accelerator.is_main_process:
                on_log(step, {"loss": mean_loss, "lr": learning_rate, **logs})
        stopping = reduced[2] > 0
        checkpoint = None
        if config.output_dir and ((config.checkpointing_steps and step % config.checkpointing_steps == 0)
                                  or stopping):
            checkpoint = save_checkpoint(accelerator, config.output_dir, step, losses, config.save_total_limit,
                                         save_extra)
        if stopping:
            bar.close()
            stopped = TrainingStopped(step, stop.signal_name or "a stop signal (on another process)", checkpoint)
            accelerator.print(stopped.message)
            raise stopped
        if reduced[1] > 0:
            accelerator.print(f"time budget of {config.max_seconds:.0f} s reached after step {step}")
            break
    bar.close()


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
