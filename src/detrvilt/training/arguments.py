"""The arguments DETR's and ViLT's scripts share (`HfArgumentParser` dataclasses, `--help` texts).

Each model's `AccelerateArguments` (`detr/arguments.py`, `vilt/arguments.py`) subclasses [`LoopArguments`] and adds
its optimizer settings (a field redeclared there only changes its default and help text); each model's
`TrainingArguments` subclasses [`BaseTrainingArguments`]. [`StreamingArguments`] are the Accelerate scripts'
`--streaming` options (a training set read as a stream of shards), [`WriteShardsArguments`] those of
`scripts/write_shards.py` (which writes the shards).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..data.streaming import KEY_COLUMN, SHARD_FORMATS, SPLIT_STRATEGIES
from .checkpoints import LATEST, TRAINER_STATE_FILE, resolve_resume
from .loop import LoopConfig

MIXED_PRECISION = ("no", "bf16", "fp16")


def accelerator_available() -> bool:
    """Whether torch sees an accelerator (CUDA, MPS, XPU, ...); without one, training runs on the CPU."""
    return torch.accelerator.is_available()


@dataclass
class BaseTrainingArguments(TrainingArguments):
    """`TrainingArguments` as DETR's and ViLT's Trainer scripts use them, with two changes:

    - where no accelerator exists, train on the CPU, as the Accelerate scripts do ([`make_accelerator`]): `--bf16`
      then runs as CPU autocast instead of failing TrainingArguments' check ("Your setup doesn't support bf16/gpu");
      `--fp16` runs in fp32 (no fp16 autocast on the CPU);
    - `--resume_from_checkpoint latest` names the newest complete Trainer checkpoint of `--output_dir` (one with
      `trainer_state.json`, which Trainer writes last), or a fresh start when there is none.
    """

    def __post_init__(self):
        if not accelerator_available():
            self.use_cpu = True
        if self.resume_from_checkpoint == LATEST:
            self.resume_from_checkpoint = resolve_resume(LATEST, self.output_dir, TRAINER_STATE_FILE)
        super().__post_init__()


@dataclass
class LoopArguments:
    """Steps, batches, precision, checkpoints and logging of the Accelerate loop ([`train_loop`])."""

    output_dir: str = field(metadata={
        "help": "Where the trained model (config.json, model.safetensors, processor files), checkpoints, the loss "
                "log and the evaluation results are written."})
    max_steps: int = field(default=1000, metadata={"help": "Number of optimizer steps."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Training examples per process and batch."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Evaluation examples per process and batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm; 0 turns clipping off."})
    mixed_precision: str = field(default="no", metadata={
        "help": f"One of {MIXED_PRECISION}; `accelerate launch --mixed_precision` sets it too."})
    seed: int = field(default=0, metadata={"help": "Seed of the model initialisation, the shuffling and dropout."})
    logging_steps: int = field(default=10, metadata={"help": "Log the losses every this many steps."})
    checkpointing_steps: int | None = field(default=None, metadata={
        "help": "Save a resumable checkpoint (model, optimizer, scheduler, RNG) every this many steps."})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "A checkpoint-<step> folder to resume from, or 'latest': the newest complete checkpoint in "
                "--output_dir (a fresh start when there is none, so one command serves the first run and every "
                "requeued one). The run continues exactly where it stopped."})
    save_total_limit: int | None = field(default=None, metadata={
        "help": "Keep at most this many checkpoints in --output_dir (the oldest are removed, never the newest)."})
    max_train_minutes: float | None = field(default=None, metadata={
        "help": "A time budget: stop training after the step during which this many minutes have passed."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    report_to: str = field(default="auto", metadata={
        "help": "Experiment trackers (accelerate's): 'auto' (TensorBoard when it is installed, into "
                "<output_dir>/runs), 'none', 'all', or comma-separated names (tensorboard, wandb, trackio, mlflow, "
                "...). Every loss term, the learning rate, train_samples_per_second and the evaluation metrics are "
                "logged under transformers.Trainer's names."})
    cpu: bool = field(default=False, metadata={
        "help": "Run on the CPU even where a GPU is present. Without a GPU the CPU is used anyway, and several "
                "processes (`torchrun --nproc_per_node N` or `accelerate launch --multi_gpu --num_processes N`) "
                "talk through gloo."})
    progress_bar: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"--mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        for name in ("max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)!r}")

    def loop_config(self) -> LoopConfig:
        """The [`LoopConfig`] of these arguments."""
        return LoopConfig(max_steps=self.max_steps, gradient_accumulation_steps=self.gradient_accumulation_steps,
                          max_grad_norm=self.max_grad_norm or None, logging_steps=self.logging_steps,
                          checkpointing_steps=self.checkpointing_steps, output_dir=self.output_dir,
                          resume_from_checkpoint=self.resume_from_checkpoint,
                          save_total_limit=self.save_total_limit, progress_bar=self.progress_bar,
                          max_seconds=None if self.max_train_minutes is None else 60 * self.max_train_minutes)


@dataclass
class StreamingArguments:
    """A training set read as a stream of shards, split across processes (`detrvilt.data.streaming`).

    A mixin for a model's `AccelerateArguments`: list it first, `class XAccelerateArguments(StreamingArguments,
    LoopArguments)`, so that its fields (all with defaults) come after `LoopArguments`' required `output_dir`; its
    `__post_init__` calls the next base's.
    """

    streaming: bool = field(default=False, metadata={
        "help": "Read the training set from --stream_source as a stream (shard by shard, never all on one disk) "
                "instead of the map-style --dataset. Checkpoints hold every process's stream position."})
    stream_source: str | None = field(default=None, metadata={
        "help": "A folder of Parquet or WebDataset shards (detrvilt.data.streaming.write_parquet_shards writes "
                "them from any source), or a Hub dataset id."})
    stream_split: str = field(default="train", metadata={"help": "The split of --stream_source to train on."})
    shuffle_buffer_size: int = field(default=1000, metadata={
        "help": "Shuffle the stream in blocks of this many consecutive rows (per process and DataLoader worker; "
                "each block's order drawn from the seed, the epoch and the rows' keys); 0 keeps the rows in file "
                "order. The shard order changes every epoch either way. A resume continues exactly where the run "
                "stopped, in both cases."})
    stream_split_strategy: str = field(default="auto", metadata={
        "help": f"How processes share the stream, one of {SPLIT_STRATEGIES}: 'shards' (whole shards each: needs "
                "at least as many shards as processes), 'examples' (each reads all and keeps one in N), 'auto' "
                "(shards when their number is a multiple of the number of processes)."})
    stream_key_column: str = field(default=KEY_COLUMN, metadata={
        "help": "The column of unique integer keys that seeds each example's random draws (write_parquet_shards "
                "adds example_index; image_id works where unique)."})

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.streaming and not self.stream_source:
            raise ValueError("--streaming needs --stream_source (a folder of shards or a Hub dataset id)")
        if self.shuffle_buffer_size < 0:
            raise ValueError(f"--shuffle_buffer_size must be >= 0, got {self.shuffle_buffer_size!r}")
        if self.stream_split_strategy not in SPLIT_STRATEGIES:
            raise ValueError(f"--stream_split_strategy must be one of {SPLIT_STRATEGIES}, got "
                             f"{self.stream_split_strategy!r}")


SHARD_MODELS = ("detr", "vilt")


@dataclass
class WriteShardsArguments:
    """`scripts/write_shards.py`: which model's data source to write as shards, where and how (the source itself is
    chosen with the model's data arguments, as in its training scripts)."""

    output_dir: str = field(metadata={
        "help": "The folder of the shards (created; existing shards of the same split are replaced): what "
                "--stream_source names."})
    model: str = field(default="detr", metadata={
        "help": f"One of {SHARD_MODELS}: whose data arguments pick the source (DETR: --dataset synthetic|coco|disk "
                "or --dataset_name; ViLT: --task and --dataset synthetic|files|disk or --dataset_name). The rows "
                "written are those the model's map-style training reads (ViLT pretraining: one caption per row)."})
    shard_format: str = field(default="parquet", metadata={
        "help": f"One of {SHARD_FORMATS}: Parquet shards (the Hub's layout) or WebDataset tars."})
    num_shards: int | None = field(default=None, metadata={
        "help": "Number of shards (rows split evenly). Choose a multiple of processes x DataLoader workers so that "
                "every reader gets whole shards. Default: Parquet closes a shard at --max_shard_mib, WebDataset "
                "writes one."})
    max_shard_mib: int = field(default=512, metadata={"help": "Parquet without --num_shards: MiB per shard."})
    splits: str = field(default="train", metadata={
        "help": "Comma-separated splits to write: 'train' (what --streaming reads), and 'validation' for the "
                "evaluation set too (written under that split name)."})

    def __post_init__(self):
        if self.model not in SHARD_MODELS:
            raise ValueError(f"--model must be one of {SHARD_MODELS}, got {self.model!r}")
        if self.shard_format not in SHARD_FORMATS:
            raise ValueError(f"--shard_format must be one of {SHARD_FORMATS}, got {self.shard_format!r}")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"--num_shards must be a positive integer, got {self.num_shards!r}")
        if self.max_shard_mib < 1:
            raise ValueError(f"--max_shard_mib must be a positive integer, got {self.max_shard_mib!r}")
        unknown = [split for split in self.split_names() if split not in ("train", "validation")]
        if unknown or not self.split_names():
            raise ValueError(f"--splits must name 'train' and/or 'validation', got {self.splits!r}")

    def split_names(self) -> list[str]:
        return [split.strip() for split in self.splits.split(",") if split.strip()]
