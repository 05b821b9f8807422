"""Run tracking of the Accelerate scripts: `--report_to tensorboard` writes every loss term, the learning rate, the
throughput and the evaluation metrics under transformers.Trainer's names; read back from the event file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detrvilt.training.recipes import resolve_report_to

ROOT = Path(__file__).resolve().parents[1]
TINY_DETR = ["--backbone", "resnet18", "--d_model", "32", "--encoder_layers", "1", "--decoder_layers", "2",
             "--attention_heads", "4", "--ffn_dim", "64", "--num_queries", "6", "--no_freeze_batch_norm",
             "--synthetic_train_size", "8", "--synthetic_eval_size", "2", "--synthetic_image_size", "64",
             "--in_memory", "--per_device_train_batch_size", "2"]


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


def test_tensorboard_event_file_holds_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_detr_accelerate.py"), "--output_dir", str(out),
         "--max_steps", "4", "--logging_steps", "2", "--report_to", "tensorboard", "--progress_bar", "false",
         *TINY_DETR], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scalars = read_scalars(out / "runs")
    for name in ("loss", "learning_rate", "loss_ce", "loss_bbox", "loss_giou", "train_samples_per_second"):
        assert [step for step, _ in scalars[name]] == [2, 4], name
    printed = [line for line in result.stdout.splitlines() if line.startswith("step 4/4")][0]
    assert f"loss {scalars['loss'][-1][1]:.4g}" in printed  # the same number as printed
    assert all(value > 0 for _, value in scalars["train_samples_per_second"])
    assert scalars["eval_map"][0][0] == 4 and 0.0 <= scalars["eval_map"][0][1] <= 1.0
    assert "eval_num_images" in scalars


def test_report_to_names_are_checked():
    assert resolve_report_to("none") == [] and resolve_report_to(None) == []
    assert resolve_report_to("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert resolve_report_to("all") == ["all"]
    with pytest.raises(ValueError, match="report_to must be"):
        resolve_report_to("tensorbored")
