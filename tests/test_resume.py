"""Runs that survive being killed: the Accelerate scripts of DETR and ViLT on their default options (DETR's
augmentation on; ViLT with RandAugment), stopped by SIGKILL right after a checkpoint or by SIGTERM mid-run, then run
again with `--resume_from_checkpoint latest`, end with the losses and weights of an uninterrupted run; a checkpoint
killed while being written is never resumed from; `save_total_limit` keeps the newest.

Several processes are started the way SLURM's `srun` starts them (one command per rank, with RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT set), which is also how a stop signal reaches every rank.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import free_port
from safetensors.torch import load_file

from detrvilt.training import RESUMABLE_EXIT_CODE, latest_checkpoint, rotate_checkpoints

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"

DETR = [str(SCRIPTS / "train_detr_accelerate.py"),
        "--backbone", "resnet18", "--d_model", "32", "--encoder_layers", "1", "--decoder_layers", "2",
        "--attention_heads", "4", "--ffn_dim", "64", "--num_queries", "6", "--no_freeze_batch_norm",
        "--synthetic_train_size", "24", "--synthetic_eval_size", "2", "--synthetic_image_size", "64",
        "--synthetic_max_objects", "3", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3"]
VILT = [str(SCRIPTS / "train_vilt_accelerate.py"), "--task", "pretrain", "--augment",
        "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "4", "--intermediate_size", "64",
        "--patch_size", "16", "--image_size", "64", "--synthetic_train_size", "24", "--synthetic_eval_size", "4",
        "--synthetic_image_size", "64", "--shortest_edge", "64", "--max_text_length", "20",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4"]
COMMON = ["--max_steps", "12", "--checkpointing_steps", "2", "--logging_steps", "1", "--progress_bar", "false"]
MODELS = {"detr": DETR, "vilt": VILT}


def launch(command, output_dir, world_size=1, workers=0, extra=()):
    """Start the script once per rank (as srun does); returns the processes."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    port = str(free_port())
    processes = []
    for rank in range(world_size):
        if world_size > 1:
            env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                   "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        processes.append(subprocess.Popen(
            [sys.executable, *command, *COMMON, "--output_dir", str(output_dir), "--num_workers", str(workers),
             *extra], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return processes


def finish(processes, timeout=600):
    """Wait for every process; returns their exit codes and outputs."""
    results = []
    for process in processes:
        output, _ = process.communicate(timeout=timeout)
        results.append((process.returncode, output))
    return results


def run(command, output_dir, **kwargs):
    results = finish(launch(command, output_dir, **kwargs))
    for code, output in results:
        assert code == 0, output[-3000:]
    return results


def wait_for(path: Path, processes, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if any(p.poll() is not None for p in processes):
            outputs = [p.communicate()[0][-2000:] for p in processes]
            raise AssertionError(f"a process ended before {path} appeared: {outputs}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def final_state(output_dir: Path):
    summary = json.loads((output_dir / "train_summary.json").read_text())
    return summary["losses"], load_file(str(output_dir / "model.safetensors"))


def assert_same_run(actual_dir: Path, expected_dir: Path):
    losses, weights = final_state(actual_dir)
    expected_losses, expected_weights = final_state(expected_dir)
    assert len(losses) == len(expected_losses) == 12
    assert losses == pytest.approx(expected_losses, rel=1e-5, abs=1e-6)
    assert weights.keys() == expected_weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(value, expected_weights[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference runs, one per (model, number of processes), built when first asked for."""
    done = {}

    def get(model, world_size):
        if (model, world_size) not in done:
            folder = tmp_path_factory.mktemp(f"{model}_{world_size}_uninterrupted")
            run(MODELS[model], folder, world_size=world_size)
            done[model, world_size] = folder
        return done[model, world_size]

    return get


@pytest.mark.parametrize("model", ["detr", pytest.param("vilt", marks=pytest.mark.slow)])
def test_sigkill_after_a_checkpoint_then_latest_ends_as_the_uninterrupted_run(model, tmp_path, uninterrupted):
    folder = tmp_path / "run"
    processes = launch(MODELS[model], folder)
    wait_for(folder / "checkpoint-4" / "loop_state.json", processes)
    for process in processes:
        process.kill()
    finish(processes)
    assert not (folder / "train_summary.json").exists()  # killed before the end
    # The resumed run takes another number of DataLoader workers: the augmentation does not depend on it.
    results = run(MODELS[model], folder, workers=2, extra=["--resume_from_checkpoint", "latest"])
    assert "resumed from" in results[0][1]
    assert_same_run(folder, uninterrupted(model, 1))


@pytest.mark.slow
@pytest.mark.parametrize("model, stop", [("detr", "SIGKILL"), ("detr", "SIGTERM"), ("vilt", "SIGTERM")])
def test_two_processes_stopped_then_latest_end_as_the_uninterrupted_run(model, stop, tmp_path, uninterrupted):
    """2 processes with 2 DataLoader workers each: SIGKILL of both ranks right after a checkpoint, or SIGTERM to one
    rank only (both must stop after the same step, save it together and exit with 75)."""
    folder = tmp_path / "run"
    processes = launch(MODELS[model], folder, world_size=2, workers=2)
    wait_for(folder / "checkpoint-2" / "loop_state.json", processes)
    if stop == "SIGKILL":
        for process in processes:
            process.kill()
        finish(processes)
    else:
        processes[1].send_signal(signal.SIGTERM)
        results = finish(processes)
        assert [code for code, _ in results] == [RESUMABLE_EXIT_CODE] * 2, results[0][1][-3000:]
        assert "stopped, resumable" in results[0][1] + results[1][1]
    checkpoint = latest_checkpoint(folder)
    assert checkpoint is not None and int(checkpoint.rsplit("-", 1)[1]) < 12
    assert not (folder / "train_summary.json").exists()
    run(MODELS[model], folder, world_size=2, extra=["--resume_from_checkpoint", "latest"])
    assert_same_run(folder, uninterrupted(model, 2))


def test_sigterm_in_one_process_leaves_a_complete_checkpoint(tmp_path, uninterrupted):
    folder = tmp_path / "run"
    processes = launch(DETR, folder, extra=["--checkpointing_steps", "100"])
    # once step 3 is logged, ask it to stop: it finishes the step in progress, saves it and exits with status 75
    deadline = time.monotonic() + 300
    lines = []
    for line in processes[0].stdout:
        lines.append(line)
        if line.startswith("step 3/"):
            processes[0].send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "".join(lines[-50:])
    output = "".join(lines) + processes[0].communicate(timeout=300)[0]
    assert processes[0].returncode == RESUMABLE_EXIT_CODE, output[-3000:]
    assert "stopped, resumable: SIGTERM received" in output
    checkpoint = latest_checkpoint(folder)
    assert checkpoint is not None, output[-3000:]
    run(DETR, folder, extra=["--checkpointing_steps", "100", "--resume_from_checkpoint", "latest"])
    assert_same_run(folder, uninterrupted("detr", 1))


def test_latest_skips_a_checkpoint_torn_while_being_written(tmp_path, uninterrupted):
    folder = tmp_path / "run"
    processes = launch(DETR, folder)
    wait_for(folder / "checkpoint-6" / "loop_state.json", processes)
    for process in processes:
        process.kill()
    finish(processes)
    # What a kill in the middle of saving step 8 leaves: the temporary folder with part of the state, and (had the
    # loop written to the final name, as before) a checkpoint-8 folder without its loop state.
    for name in ("checkpoint-8", ".tmp-checkpoint-8"):
        shutil_copy_partial(folder / "checkpoint-6", folder / name)
    assert latest_checkpoint(folder) == str(folder / "checkpoint-6")
    results = run(DETR, folder, extra=["--resume_from_checkpoint", "latest"])
    assert f"resumed from {folder / 'checkpoint-6'} at step 6" in results[0][1]
    assert_same_run(folder, uninterrupted("detr", 1))
    assert not (folder / ".tmp-checkpoint-8").exists()  # cleaned up by the next save


def shutil_copy_partial(source: Path, target: Path):
    """A torn copy of a checkpoint: everything but the loop state, which is written last."""
    target.mkdir()
    for item in source.iterdir():
        if item.name != "loop_state.json" and item.is_file():
            (target / item.name).write_bytes(item.read_bytes()[: max(1, item.stat().st_size // 2)])


TRAINER_DETR = [str(SCRIPTS / "train_detr.py"), *DETR[1:-4], "--per_device_train_batch_size", "2",
                "--learning_rate", "1e-3", "--max_steps", "12", "--save_steps", "2", "--logging_steps", "1",
                "--eval_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0"]


def trainer_sigterm_round_trip(command: list[str], env: dict, folder: Path, stop_after: int = 4) -> None:
    """A Trainer script (`command`, without `--output_dir`) run three times under `folder`: uninterrupted
    (`reference/`); stopped by SIGTERM once `checkpoint-{stop_after}` is written (status 75, a checkpoint, no final
    model); resumed from `latest`, which must end with the uninterrupted run's weights."""

    def trainer_run(output_dir, *extra):
        return subprocess.Popen([sys.executable, *command, "--output_dir", str(output_dir), *extra], env=env,
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    reference = folder / "reference"
    output = trainer_run(reference).communicate(timeout=600)[0]
    assert (reference / "model.safetensors").exists(), output[-3000:]
    run_dir = folder / "run"
    process = trainer_run(run_dir)
    wait_for(run_dir / f"checkpoint-{stop_after}" / "trainer_state.json", [process])
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == RESUMABLE_EXIT_CODE, output[-3000:]
    assert "stopped, resumable: SIGTERM received" in output
    assert not (run_dir / "model.safetensors").exists()
    resumed = trainer_run(run_dir, "--resume_from_checkpoint", "latest")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-3000:]
    weights, expected = load_file(str(run_dir / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    for name, value in weights.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_trainer_script_stops_on_sigterm_and_resumes_from_latest(tmp_path):
    """scripts/train_detr.py (transformers.Trainer): SIGTERM -> a checkpoint of the step and status 75; `latest`
    resumes from it and ends as the uninterrupted run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    trainer_sigterm_round_trip(TRAINER_DETR, env, tmp_path)


def test_save_total_limit_keeps_the_newest(tmp_path):
    run(DETR, tmp_path, extra=["--save_total_limit", "2"])
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-12"]
    assert not list(tmp_path.glob(".tmp-checkpoint-*"))


def test_rotation_never_removes_the_newest_and_latest_needs_a_complete_folder(tmp_path):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "loop_state.json").write_text("{}")
    (tmp_path / "checkpoint-8").mkdir()  # torn: no loop state
    (tmp_path / ".tmp-checkpoint-10").mkdir()
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-6")
    removed = rotate_checkpoints(tmp_path, 1)
    assert sorted(Path(p).name for p in removed) == [".tmp-checkpoint-10", "checkpoint-2", "checkpoint-4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-6", "checkpoint-8"]
    with pytest.raises(ValueError, match="save_total_limit must be a positive integer"):
        rotate_checkpoints(tmp_path, 0)


def test_latest_without_checkpoints_is_a_fresh_start_and_a_torn_folder_is_refused(tmp_path):
    from accelerate import Accelerator

    from detrvilt.training import load_checkpoint
    from detrvilt.training.checkpoints import resolve_resume

    assert resolve_resume("latest", tmp_path / "nothing-here") is None
    assert resolve_resume(str(tmp_path / "x"), tmp_path) == str(tmp_path / "x")
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(ValueError, match="not a complete checkpoint folder"):
        load_checkpoint(Accelerator(cpu=True), str(tmp_path / "checkpoint-3"))


@pytest.mark.parametrize("status, requeued", [(RESUMABLE_EXIT_CODE, True), (0, False), (1, False)])
def test_slurm_script_gives_each_task_its_rank_and_requeues_on_status_75(tmp_path, status, requeued):
    """scripts/slurm/requeue.sbatch with stand-ins for srun (two tasks) and scontrol: every task gets RANK,
    WORLD_SIZE, LOCAL_RANK and the master address; the job is requeued exactly when the command exits with 75."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/bin/bash\nshift  # --kill-on-bad-exit=0\nstatus=0\n"
        "for task in 0 1; do SLURM_PROCID=$task SLURM_LOCALID=$task SLURM_NTASKS=2 \"$@\" || status=$?; done\n"
        "exit $status\n")
    (bin_dir / "scontrol").write_text(
        "#!/bin/bash\nif [ \"$1\" = show ]; then echo node-a; echo node-b; "
        f"else echo \"$@\" >> {tmp_path}/requeued; fi\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    record = tmp_path / "ranks"
    command = (f"import os, sys; open({str(record)!r}, 'a').write(' '.join(os.environ[k] for k in "
               f"('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR')) + chr(10)); sys.exit({status})")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
           "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_NTASKS_PER_NODE": "2"}
    result = subprocess.run(["bash", str(SCRIPTS / "slurm" / "requeue.sbatch"), sys.executable, "-c", command],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == status, result.stderr
    assert record.read_text().splitlines() == ["0 2 0 node-a", "1 2 1 node-a"]
    assert (tmp_path / "requeued").exists() == requeued
    if requeued:
        assert (tmp_path / "requeued").read_text().split() == ["requeue", "42"]
