"""ViLT's recipes as DETR's: the Accelerate script reports to trackers (`--report_to`), the Trainer recipe seeds before
building the model and stops on SIGTERM with a resumable checkpoint (status 75, then `--resume_from_checkpoint
latest`), and a task model started from a pretraining folder keeps none of its remote-code or pipeline entries."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_tracking import read_scalars
from vilt_testing import tiny_vilt_config

from detrvilt.modeling.vilt.heads_vilt import ViltForPreTraining
from detrvilt.training.vilt.arguments import ViltDataArguments, ViltModelArguments, ViltTrainingArguments
from detrvilt.training.vilt.recipes import init_from_pretraining, run_vilt_trainer_training

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
SIZE = 64
TINY = ["--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "4", "--intermediate_size", "64",
        "--patch_size", "16", "--image_size", str(SIZE), "--shortest_edge", str(SIZE), "--synthetic_image_size",
        str(SIZE), "--max_text_length", "20"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def test_vilt_accelerate_script_reports_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "train_vilt_accelerate.py"), "--task", "vqa", "--output_dir", str(out),
         "--max_steps", "4", "--logging_steps", "2", "--report_to", "tensorboard", "--progress_bar", "false",
         "--synthetic_train_size", "8", "--synthetic_eval_size", "4", "--per_device_train_batch_size", "4", *TINY],
        capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scalars = read_scalars(out / "runs")
    for name in ("loss", "learning_rate", "train_samples_per_second"):
        assert [step for step, _ in scalars[name]] == [2, 4], name
    assert scalars["eval_vqa_score"][0][0] == 4 and 0.0 <= scalars["eval_vqa_score"][0][1] <= 1.0


def _trainer_args(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to=[], use_cpu=True,
                  save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=3)
    return ViltTrainingArguments(**{**kwargs, **overrides})


def test_trainer_recipe_seeds_the_model_from_the_run_seed(tmp_path):
    """Two runs with the same --seed start from the same weights, whatever torch's global generator held before."""
    model_args = ViltModelArguments(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    patch_size=16, image_size=SIZE)
    data_args = ViltDataArguments(task="vqa", synthetic_train_size=4, synthetic_eval_size=1, synthetic_image_size=SIZE,
                                  shortest_edge=SIZE, max_text_length=20)
    weights = []
    for run, global_seed in enumerate((123, 456)):
        torch.manual_seed(global_seed)
        result = run_vilt_trainer_training(model_args, data_args,
                                           _trainer_args(tmp_path / str(run), learning_rate=1e-12))
        weights.append({k: v.detach().clone() for k, v in result["trainer"].model.state_dict().items()})
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=1e-9, msg=name)


def test_task_model_keeps_no_pretraining_auto_map_or_pipelines():
    pretrained = ViltForPreTraining(tiny_vilt_config())
    pretrained.config.auto_map = {"AutoModel": "modeling_vilt.ViltModel"}
    pretrained.config.custom_pipelines = {"vilt-pretraining": {"impl": "pipeline_vilt.Pretraining"}}
    model = init_from_pretraining("vqa", pretrained, {"id2label": {0: "yes", 1: "no"},
                                                      "label2id": {"yes": 0, "no": 1}})
    assert getattr(model.config, "custom_pipelines", None) != pretrained.config.custom_pipelines
    assert getattr(model.config, "auto_map", None) != pretrained.config.auto_map
    assert model.config.num_labels == 2


TRAINER_VILT = [str(SCRIPTS / "train_vilt.py"), "--task", "vqa", *TINY, "--synthetic_train_size", "48",
                "--synthetic_eval_size", "1", "--per_device_train_batch_size", "4", "--max_steps", "12",
                "--save_steps", "2", "--logging_steps", "1", "--eval_strategy", "no", "--report_to", "none",
                "--disable_tqdm", "true", "--seed", "0", "--hidden_dropout_prob", "0"]


@pytest.mark.slow
def test_trainer_script_stops_on_sigterm_and_resumes_from_latest(tmp_path):
    """scripts/train_vilt.py: SIGTERM -> a checkpoint of the step and status 75; `latest` resumes from it and ends
    with the uninterrupted run's weights."""
    from test_resume import trainer_sigterm_round_trip

    trainer_sigterm_round_trip(TRAINER_VILT, ENV, tmp_path)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["train"]["train_loss"] > 0
