"""`--bf16` / `--fp16` with the Trainer scripts on a machine without a GPU: they train on the CPU, as the Accelerate
scripts do, instead of failing TrainingArguments' "Your setup doesn't support bf16/gpu" check."""

import sys
from pathlib import Path

import pytest
import torch

from detrvilt.training.detr.arguments import DetrTrainingArguments
from detrvilt.training.vilt.arguments import ViltTrainingArguments

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import train_detr  # noqa: E402
import train_vilt  # noqa: E402

NO_GPU = pytest.mark.skipif(torch.accelerator.is_available(), reason="checks the behaviour without a GPU")


@NO_GPU
@pytest.mark.parametrize("arguments", [DetrTrainingArguments, ViltTrainingArguments])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_without_a_gpu_selects_the_cpu(arguments, precision, tmp_path, fresh_accelerate_state):
    args = arguments(output_dir=str(tmp_path), report_to=[], **{precision: True})
    assert args.use_cpu
    assert args.device.type == "cpu"


@pytest.mark.parametrize("arguments", [DetrTrainingArguments, ViltTrainingArguments])
def test_use_cpu_is_left_alone_where_an_accelerator_exists(arguments, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert not arguments(output_dir=str(tmp_path), report_to=[]).use_cpu
    assert arguments(output_dir=str(tmp_path), report_to=[], use_cpu=True).use_cpu


@NO_GPU
def test_detr_trainer_script_trains_in_bf16_on_the_cpu(tmp_path, fresh_accelerate_state):
    result = train_detr.main([
        "--output_dir", str(tmp_path / "detr"), "--bf16", "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--backbone", "resnet18",
        "--d_model", "32", "--encoder_layers", "1", "--decoder_layers", "2", "--attention_heads", "4",
        "--ffn_dim", "64", "--num_queries", "6", "--no_freeze_batch_norm", "--synthetic_train_size", "8",
        "--synthetic_eval_size", "4", "--synthetic_image_size", "64", "--synthetic_max_objects", "3"])
    assert result["train"]["train_loss"] > 0 and result["eval"]["eval_num_images"] == 4
    assert (tmp_path / "detr" / "model.safetensors").is_file()


@NO_GPU
def test_vilt_trainer_script_trains_in_bf16_on_the_cpu(tmp_path, fresh_accelerate_state):
    result = train_vilt.main([
        "--task", "vqa", "--output_dir", str(tmp_path / "vilt"), "--bf16", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm",
        "true", "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "4",
        "--intermediate_size", "64", "--patch_size", "16", "--image_size", "64", "--shortest_edge", "64",
        "--synthetic_image_size", "64", "--synthetic_train_size", "16", "--synthetic_eval_size", "8"])
    assert result["trainer"].accelerator.mixed_precision == "bf16"
    assert result["train"]["train_loss"] > 0 and result["eval"]["eval_num_examples"] == 8
    assert (tmp_path / "vilt" / "model.safetensors").is_file()
