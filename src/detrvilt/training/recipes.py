"""What DETR's and ViLT's recipes (`detr/recipes.py`, `vilt/recipes.py`) share: the `Accelerator` that also spans
CPU-only processes and reports to experiment trackers, the streaming training loader, and the Hub-ready output
folder. Preparing model, optimizer and loaders for every setting (DDP, FSDP2, DeepSpeed, FSDP2 on CPU processes) and
the full model to save after sharded training are in `sharding.py` ([`prepare_training`], [`model_for_saving`])."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import LoggerType, is_tensorboard_available

from ..data.streaming import distribute_stream, load_stream, stream_loader
from .arguments import StreamingArguments, accelerator_available

TRACKERS = tuple(kind.value for kind in LoggerType if kind.value != "all")


def resolve_report_to(report_to: str | None) -> list[str]:
    """The trackers `--report_to` names: `"auto"` (TensorBoard when it is installed, else none), `"none"`, `"all"`
    (every tracker accelerate finds installed) or a comma-separated list of accelerate's trackers."""
    value = (report_to or "none").strip()
    if value == "none":
        return []
    if value == "auto":
        return ["tensorboard"] if is_tensorboard_available() else []
    if value == "all":
        return ["all"]
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(f"report_to must be 'auto', 'none', 'all' or names among {TRACKERS}, got {report_to!r}")
    return names


def make_accelerator(mixed_precision: str = "no", cpu: bool = False, report_to: str | None = None,
                     project_dir: str | None = None) -> Accelerator:
    """An `Accelerator` that also spans several CPU-only processes, and reports to `report_to`'s trackers
    ([`resolve_report_to`]; their files go under `project_dir/runs`).

    accelerate joins processes started by `torchrun` / `accelerate launch --multi_gpu` into one gloo group only when
    told to use the CPU (`Accelerator(cpu=True)`); on a machine without an accelerator that is what the user means, so
    it is set there. (`accelerate launch --cpu --num_processes N` starts a single process unless MPI is set up.)

    The learning-rate scheduler steps once per optimizer step (`step_scheduler_with_optimizer=False`): the loop calls
    `scheduler.step()` once per optimizer step, and the recipes' schedules count optimizer steps (`--lr_drop_step`,
    ViLT's warmup and decay over `--max_steps`). accelerate's default would step a prepared scheduler once per
    process at every step, so that N processes would run the schedule N times faster.
    """
    trackers = resolve_report_to(report_to)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu or not accelerator_available(),
                       log_with=trackers or None, step_scheduler_with_optimizer=False,
                       project_dir=os.path.join(project_dir, "runs") if trackers and project_dir else None)


def streaming_train_loader(accelerator: Accelerator, stream_args: StreamingArguments,
                           examples: Callable[..., torch.utils.data.IterableDataset], batch_size: int,
                           collate_fn: Callable, num_workers: int = 0, seed: int = 0):
    """The training loader of a `--streaming` run: `stream_args.stream_source` read as a stream ([`load_stream`]),
    this process's share of it ([`distribute_stream`]), turned into examples by
    `examples(dataset, key_column=..., shuffle_buffer_size=..., seed=...)` (DETR:
    `functools.partial(StreamingDetectionDataset, transform=transform)`; ViLT: `StreamingExamples`), batched by the
    map-style path's `collate_fn` in a `StatefulDataLoader` ([`stream_loader`]). Pass it to `train_loop` as it is
    (`prepare_training` leaves it alone; `accelerator.prepare` would split it again)."""
    dataset = load_stream(stream_args.stream_source, stream_args.stream_split, stream_args.stream_key_column)
    dataset = distribute_stream(dataset, accelerator.process_index, accelerator.num_processes,
                                stream_args.stream_split_strategy)
    wrapped = examples(dataset, key_column=stream_args.stream_key_column,
                       shuffle_buffer_size=stream_args.shuffle_buffer_size, seed=seed)
    return stream_loader(wrapped, batch_size, collate_fn, num_workers=num_workers, seed=seed)


def start_tracking(accelerator: Accelerator, project_name: str, settings: Mapping[str, Mapping]) -> None:
    """Open the run in the accelerator's trackers, with the run's settings as hyper-parameters (`settings`: the
    argument dataclasses as dicts, flattened to `group/name`; values other than numbers, strings and booleans are
    written as text)."""
    if not accelerator.log_with:
        return
    flat = {}
    for group, values in settings.items():
        for name, value in values.items():
            flat[f"{group}/{name}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    accelerator.init_trackers(project_name, config=flat)


def finish_tracking(accelerator: Accelerator, metrics: Mapping | None, step: int) -> None:
    """Log the evaluation `metrics` (as `eval_<name>`, transformers.Trainer's names) at `step`, then close the
    trackers (not `accelerator.end_training()`, which also ends the process group the recipe still needs)."""
    if not accelerator.log_with:
        return
    numbers = {f"eval_{k}": float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
    if numbers:
        accelerator.log(numbers, step=step)
    for tracker in accelerator.trackers:
        tracker.finish()


def save_trained(model, processor, output_dir: str, summary: dict | None = None) -> None:
    """The Hub-ready folder: `config.json` (with `auto_map`), `model.safetensors`, `preprocessor_config.json`, the
    `modeling/<model>` files (remote code: loads with `trust_remote_code=True` where detrvilt is not installed) and
    `train_summary.json`."""
    from ..hub import save_for_hub

    os.makedirs(output_dir, exist_ok=True)
    save_for_hub(model, processor, output_dir)
    if summary is not None:
        with open(os.path.join(output_dir, "train_summary.json"), "w") as handle:
            json.dump(summary, handle, indent=1, default=str)
