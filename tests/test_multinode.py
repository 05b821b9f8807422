"""Two "machines" on localhost: two `accelerate launch` commands with machine ranks 0 and 1 against 127.0.0.1, one
process each, as a user starts a run on two nodes. They form one process group, train, and evaluate every held-out
image exactly once."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "resnet18", "--d_model", "32", "--encoder_layers", "1", "--decoder_layers", "2",
        "--attention_heads", "4", "--ffn_dim", "64", "--num_queries", "6", "--no_freeze_batch_norm",
        "--synthetic_train_size", "8", "--synthetic_eval_size", "5", "--synthetic_image_size", "64",
        "--synthetic_max_objects", "3", "--in_memory", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "2", "--max_steps", "2", "--progress_bar", "false"]


def machine_command(rank: int, port: int, output_dir: Path) -> list[str]:
    """What docs/training.md tells a user to run on machine `rank` of 2 (one process per machine here)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
            "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
            str(ROOT / "scripts" / "train_detr_accelerate.py"), "--output_dir", str(output_dir), *TINY]


def test_two_machines_on_localhost_train_and_evaluate_every_image_once(tmp_path):
    port = free_port()
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # Each machine writes its own output folder, as on separate disks; only the main process (machine 0) saves.
    machines = [subprocess.Popen(machine_command(rank, port, tmp_path / f"machine{rank}"), env=environment,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [machine.communicate(timeout=600)[0] for machine in machines]
    for machine, output in zip(machines, outputs, strict=True):
        assert machine.returncode == 0, output[-4000:]
        # DDP's buckets match the channels-last backbone's gradients (no copy of every gradient at every step)
        assert "Grad strides do not match bucket view strides" not in output
    summary = json.loads((tmp_path / "machine0" / "train_summary.json").read_text())
    assert summary["num_processes"] == 2
    assert len(summary["losses"]) == 2 and all(math.isfinite(v) for v in summary["losses"])
    assert summary["eval"]["num_images"] == 5  # 5 images over 2 machines x batch 2: each counted once
    assert not (tmp_path / "machine1" / "train_summary.json").exists()
