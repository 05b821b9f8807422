"""Checkpoint folders that cannot be torn, found again after a crash, and rotated: for the Accelerate loop and for
the Trainer scripts.

A checkpoint of the Accelerate loop is written into a hidden temporary folder `.tmp-checkpoint-{step}` next to the
others (`accelerator.save_state` from every process, then `loop_state.json` last, from the main process) and renamed to
`checkpoint-{step}` only when complete. A process killed while writing leaves at most a temporary folder, which is
never taken for a checkpoint and is removed by the next save. A folder counts as complete when its name is
`checkpoint-{step}` and it holds its marker file: `loop_state.json` for the loop, `trainer_state.json` for
`transformers.Trainer` (which writes it after the weights, optimizer and RNG states). The folders must be on a file
system every process sees (as `accelerator.save_state` already assumes for multi-node runs).

State that differs between processes and that `save_state` does not know (a process's stream position, a model
sharded outside accelerate) is written by a `save_extra(folder)` callback on every process into the same temporary
folder, before the rename: [`write_process_state`] / [`read_process_state`] keep one file per process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable

import torch
from accelerate import Accelerator

CHECKPOINT_PREFIX = "checkpoint"
TEMPORARY_PREFIX = ".tmp-checkpoint"
LOOP_STATE_FILE = "loop_state.json"
TRAINER_STATE_FILE = "trainer_state.json"
LATEST = "latest"
_CHECKPOINT = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")
_TEMPORARY = re.compile(rf"^{re.escape(TEMPORARY_PREFIX)}-(\d+)(-replaced)?$")


def complete_checkpoints(output_dir: str | os.PathLike, marker: str = LOOP_STATE_FILE) -> list[tuple[int, str]]:
    """`(step, folder)` of every complete checkpoint in `output_dir` (name `checkpoint-{step}` and `marker` inside),
    by increasing step; `[]` when the folder does not exist."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT.match(name)
        folder = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(folder, marker)):
            found.append((int(match.group(1)), folder))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike, marker: str = LOOP_STATE_FILE) -> str | None:
    """The complete checkpoint of `output_dir` with the highest step, or `None`."""
    found = complete_checkpoints(output_dir, marker)
    return found[-1][1] if found else None


def resolve_resume(resume_from_checkpoint: str | None, output_dir: str | os.PathLike | None,
                   marker: str = LOOP_STATE_FILE) -> str | None:
    """What `--resume_from_checkpoint` names: `None` (a fresh start), a folder (as given), or `"latest"`: the newest
    complete checkpoint of `output_dir`, or `None` when there is none yet (a fresh start, so that one command serves
    the first run and every requeued one)."""
    if resume_from_checkpoint != LATEST:
        return resume_from_checkpoint
    if output_dir is None:
        raise ValueError("resume_from_checkpoint='latest' needs output_dir (where to look for checkpoints)")
    return latest_checkpoint(output_dir, marker)


def rotate_checkpoints(output_dir: str | os.PathLike, save_total_limit: int | None,
                       marker: str = LOOP_STATE_FILE) -> list[str]:
    """Remove the oldest complete checkpoints beyond `save_total_limit` (never the newest) and every temporary folder
    left by a process killed while saving. Returns the removed folders."""
    if save_total_limit is not None and save_total_limit < 1:
        raise ValueError(f"save_total_limit must be a positive integer or None, got {save_total_limit!r}")
    removed = []
    found = complete_checkpoints(output_dir, marker)
    if save_total_limit is not None:
        removed += [folder for _, folder in found[:-save_total_limit]]
    if os.path.isdir(output_dir):
        removed += [os.path.join(output_dir, name) for name in os.listdir(output_dir) if _TEMPORARY.match(name)]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, losses, save_total_limit: int | None = None,
                    save_extra: Callable[[str], None] | None = None) -> str:
    """`accelerator.save_state` plus the loop's own state (`loop_state.json`: step, losses), written atomically into
    `output_dir/checkpoint-{step}`; then the rotation of [`rotate_checkpoints`]. Every process must call it.
    `save_extra(folder)`, when given, runs on every process after `save_state`, into the not yet renamed folder.
    Returns the folder."""
    folder = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}-{step}")
    temporary = os.path.join(output_dir, f"{TEMPORARY_PREFIX}-{step}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    if save_extra is not None:
        save_extra(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(temporary, LOOP_STATE_FILE), "w") as handle:
            json.dump({"step": step, "losses": list(losses)}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if os.path.exists(folder):  # the same step saved before a resume from an earlier checkpoint
            stale = os.path.join(output_dir, f"{TEMPORARY_PREFIX}-{step}-replaced")
            os.rename(folder, stale)
            os.rename(temporary, folder)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(temporary, folder)
        rotate_checkpoints(output_dir, save_total_limit)
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(accelerator: Accelerator, folder: str, load_extra: Callable[[str], None] | None = None
                    ) -> tuple[int, list[float]]:
    """Restore a [`save_checkpoint`] folder (`load_extra(folder)` after `accelerator.load_state`, on every process);
    returns `(step, losses so far)`."""
    state_file = os.path.join(folder, LOOP_STATE_FILE)
    if not os.path.isfile(state_file):
        raise ValueError(f"resume_from_checkpoint={folder!r} is not a complete checkpoint folder (no "
                         f"{LOOP_STATE_FILE}); use 'latest' for the newest complete one")
    accelerator.load_state(folder)
    if load_extra is not None:
        load_extra(folder)
    with open(state_file) as handle:
        state = json.load(handle)
    return int(state["step"]), [float(v) for v in state["losses"]]


def write_process_state(folder: str, name: str, process_index: int, num_processes: int, state) -> str:
    """This process's `state` (plain Python values and tensors) as `folder/name/process_{index}.pt`, with the number
    of processes that wrote it. Returns the file."""
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    path = os.path.join(folder, name, f"process_{process_index:05d}.pt")
    torch.save({"num_processes": num_processes, "state": state}, path)
    return path


def read_process_state(folder: str, name: str, process_index: int, num_processes: int):
    """What [`write_process_state`] wrote for this process.

    Raises:
        `ValueError` when the folder has no such state, or it was written by another number of processes (a stream
        split across N processes cannot continue across M).
    """
    path = os.path.join(folder, name, f"process_{process_index:05d}.pt")
    if not os.path.isfile(path):
        raise ValueError(f"the checkpoint {folder!r} has no {name}/ state for process {process_index}: it was written "
                         f"by a run without it, or by fewer processes")
    saved = torch.load(path, weights_only=True)
    if saved["num_processes"] != num_processes:
        raise ValueError(f"the checkpoint {folder!r} was written by {saved['num_processes']} processes, this run has "
                         f"{num_processes}: its {name} cannot be split differently; resume with "
                         f"{saved['num_processes']} processes")
    return saved["state"]
