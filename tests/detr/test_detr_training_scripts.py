"""The DETR training scripts and the demo, run as a user would (tiny settings, offline), and their `--help`."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState
from transformers import AutoImageProcessor, AutoModelForObjectDetection

from detrvilt.training.detr.arguments import (
    DetrAccelerateArguments,
    DetrDataArguments,
    DetrModelArguments,
    DetrTrainingArguments,
)
from detrvilt.training.detr.demo import DemoArguments, run_demo

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import demo  # noqa: E402
import train_detr  # noqa: E402
import train_detr_accelerate  # noqa: E402

TINY_MODEL = ["--backbone", "resnet18", "--d_model", "32", "--encoder_layers", "1", "--decoder_layers", "2",
              "--attention_heads", "4", "--ffn_dim", "64", "--num_queries", "6", "--no_freeze_batch_norm"]
TINY_DATA = ["--synthetic_train_size", "8", "--synthetic_eval_size", "5", "--synthetic_image_size", "64",
             "--synthetic_max_objects", "3"]


@pytest.fixture
def fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _own_fields(classes):
    for cls in classes:
        inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base)
                     for f in dataclasses.fields(base)}
        for f in dataclasses.fields(cls):
            if f.name not in inherited or cls is DetrTrainingArguments and f.name in DetrTrainingArguments.__dict__:
                yield f


@pytest.mark.parametrize("script, classes", [
    (train_detr_accelerate, (DetrModelArguments, DetrDataArguments, DetrAccelerateArguments)),
    (train_detr, (DetrModelArguments, DetrDataArguments, DetrTrainingArguments)),
    (demo, (DemoArguments,)),
])
def test_help_explains_every_argument(script, classes, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage:")
    fields = list(_own_fields(classes))
    assert len(fields) >= len(classes)
    for f in fields:
        help_text = f.metadata.get("help", "")
        assert help_text, f"{script.__name__}: --{f.name} has no help"
        assert f"--{f.name}" in text, f"{script.__name__}: --{f.name} missing from --help"
        first_words = " ".join(help_text.split()[:4])
        assert first_words in text, f"{script.__name__}: help of --{f.name}"


def test_help_runs_as_a_command():
    result = subprocess.run([sys.executable, str(SCRIPTS / "train_detr_accelerate.py"), "--help"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "--mixed_precision" in result.stdout and "--resume_from_checkpoint" in result.stdout


def test_accelerate_script_trains_evaluates_and_saves(tmp_path, fresh_accelerate_state):
    out = tmp_path / "run"
    result = train_detr_accelerate.main(["--output_dir", str(out), "--max_steps", "2",
                                         "--per_device_train_batch_size", "4", "--in_memory", "--progress_bar", "false",
                                         "--checkpointing_steps", "2", *TINY_MODEL, *TINY_DATA])
    assert len(result["losses"]) == 2 and result["eval"]["num_images"] == 5
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "train_summary.json"):
        assert (out / name).is_file(), name
    assert (out / "checkpoint-2" / "loop_state.json").is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["losses"] == pytest.approx(result["losses"])
    model = AutoModelForObjectDetection.from_pretrained(out)
    assert model.config.id2label == {0: "circle", 1: "square", 2: "triangle"}
    assert AutoImageProcessor.from_pretrained(out).size["shortest_edge"] == 64


def test_accelerate_launch_with_two_processes_from_the_command_line(tmp_path):
    """The README's `accelerate launch --multi_gpu --num_processes 2 ...` command on a CPU-only machine, as a user
    types it: two processes joined through gloo."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(SCRIPTS / "train_detr_accelerate.py"), "--output_dir", str(out), "--max_steps", "2",
               "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2", "--in_memory",
               "--progress_bar", "false", *TINY_MODEL, *TINY_DATA]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=280, env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_processes"] == 2
    assert len(summary["losses"]) == 2 and all(math.isfinite(v) for v in summary["losses"])
    assert summary["eval"]["num_images"] == 5  # 5 images over 2 processes x batch 2: each counted once


@pytest.mark.slow  # the Trainer path is covered by tests/test_detr_training.py; this runs the script as a whole
def test_trainer_script_trains_evaluates_and_saves(tmp_path, fresh_accelerate_state):
    out = tmp_path / "run"
    result = train_detr.main(["--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "4",
                              "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
                              "--use_model_loss", "false", *TINY_MODEL, *TINY_DATA])
    assert result["eval"]["eval_num_images"] == 5 and "eval_map" in result["eval"]
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (out / name).is_file(), name
    AutoModelForObjectDetection.from_pretrained(out)


@pytest.mark.parametrize("argv, name", [
    (["--dataset", "imagenet"], "--dataset"),
    (["--mixed_precision", "fp8"], "--mixed_precision"),
    (["--max_steps", "0"], "--max_steps"),
    (["--dataset", "disk", "--dataset_path", "/nonexistent"], "dataset_path"),
])
def test_bad_arguments_raise_value_errors_naming_them(tmp_path, argv, name, fresh_accelerate_state):
    with pytest.raises(ValueError, match=re.escape(name)):
        train_detr_accelerate.main(["--output_dir", str(tmp_path), *argv])


def test_demo_pipeline_on_a_tiny_budget(tmp_path, fresh_accelerate_state, capsys):
    summary = run_demo(DemoArguments(output_dir=str(tmp_path), max_steps=3, batch_size=4, train_images=8,
                                     eval_images=6, warmup_steps=1, lr_drop_step=2, progress_bar=False,
                                     num_threads=2, vilt=False))
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in printed
    for name in ("detr_predictions.png", "detr_encoder_attention.png", "detr_decoder_attention.png",
                 "detr_query_boxes.png", "loss_curve.png", "demo_results.json", "model/model.safetensors",
                 "model/config.json", "model/preprocessor_config.json"):
        assert (tmp_path / name).is_file(), name
    assert summary["reload_max_abs_difference"] <= 1e-5
    assert summary["num_eval_images"] == 6
