"""The Accelerate scripts of both models at scale: `--streaming` from shards written by `write_parquet_shards` (one
process in this process, two started by `accelerate launch`), and the FSDP config on two CPU processes ending with a
plain saved model (`prepare_training` / `model_for_saving` in the recipes)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from safetensors.torch import load_file

from detrvilt import DetrForObjectDetection, ViltForPreTraining
from detrvilt.data import make_shapes_dataset, make_vilt_captions_dataset
from detrvilt.data.streaming import write_parquet_shards

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import train_detr_accelerate  # noqa: E402
import train_vilt_accelerate  # noqa: E402

SIZE = 64
TINY_DETR = ["--backbone", "resnet18", "--d_model", "32", "--encoder_layers", "1", "--decoder_layers", "2",
             "--attention_heads", "4", "--ffn_dim", "64", "--num_queries", "6", "--no_freeze_batch_norm",
             "--shortest_edge", str(SIZE), "--synthetic_image_size", str(SIZE), "--synthetic_eval_size", "2"]
TINY_VILT = ["--task", "pretrain", "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "4",
             "--intermediate_size", "64", "--patch_size", "16", "--image_size", str(SIZE), "--shortest_edge",
             str(SIZE), "--synthetic_image_size", str(SIZE), "--synthetic_eval_size", "4", "--max_text_length", "20",
             "--pretraining_objectives", "mlm,itm"]
QUIET = ["--progress_bar", "false", "--report_to", "none"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def detr_shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detr_shards")
    write_parquet_shards(make_shapes_dataset(8, seed=0, image_size=SIZE, min_objects=1, max_objects=3), folder,
                         num_shards=2)
    return folder


def _launch(arguments, timeout=280):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port()),
               *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_detr_accelerate_script_trains_on_a_stream(tmp_path, detr_shards, fresh_accelerate_state):
    out = tmp_path / "run"
    result = train_detr_accelerate.main([
        "--output_dir", str(out), "--streaming", "--stream_source", str(detr_shards), "--shuffle_buffer_size", "4",
        "--max_steps", "3", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
        "--checkpointing_steps", "3", *TINY_DETR, *QUIET])
    assert len(result["losses"]) == 3 and all(math.isfinite(v) for v in result["losses"])
    assert result["eval"]["num_images"] == 2  # the synthetic held-out images: the stream is only for training
    assert (out / "checkpoint-3" / "stream_positions").is_dir()  # the stream position is checkpointed
    model = DetrForObjectDetection.from_pretrained(out)
    assert model.config.id2label == {0: "circle", 1: "square", 2: "triangle"}  # the stream's ClassLabel
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["train_args"]["streaming"] and summary["train_args"]["stream_source"] == str(detr_shards)
    with pytest.raises(ValueError, match="--in_memory .* --streaming"):
        train_detr_accelerate.main(["--output_dir", str(tmp_path / "bad"), "--streaming", "--stream_source",
                                    str(detr_shards), "--in_memory", *TINY_DETR, *QUIET])


def test_vilt_accelerate_script_trains_on_a_stream(tmp_path, fresh_accelerate_state):
    captions = make_vilt_captions_dataset(8, seed=0, image_size=SIZE)
    write_parquet_shards(captions.select_columns(["image", "image_id", "text"]), tmp_path / "shards", num_shards=2)
    write_parquet_shards(captions.select_columns(["image", "image_id", "captions"]), tmp_path / "per_image")
    out = tmp_path / "run"
    result = train_vilt_accelerate.main([
        "--output_dir", str(out), "--streaming", "--stream_source", str(tmp_path / "shards"),
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--checkpointing_steps", "2", *TINY_VILT, *QUIET])
    assert len(result["losses"]) == 2 and all(math.isfinite(v) for v in result["losses"])
    assert result["eval"]["num_examples"] > 0 and result["train_dataset"] is None
    assert (out / "checkpoint-2" / "stream_positions").is_dir()
    ViltForPreTraining.from_pretrained(out)
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\] for task 'pretrain'.*captions_to_texts"):
        train_vilt_accelerate.main(["--output_dir", str(tmp_path / "bad"), "--streaming", "--stream_source",
                                    str(tmp_path / "per_image"), *TINY_VILT, *QUIET])


def test_two_processes_stream_through_accelerate_launch(tmp_path, detr_shards):
    """`accelerate launch --multi_gpu --num_processes 2` (two gloo processes on a CPU-only machine) with --streaming:
    each process reads its own shard, the run checkpoints both stream positions and saves one model."""
    out = tmp_path / "run"
    _launch(["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
             "--dynamo_backend", "no", str(SCRIPTS / "train_detr_accelerate.py"), "--output_dir", str(out),
             "--streaming", "--stream_source", str(detr_shards), "--max_steps", "2", "--checkpointing_steps", "2",
             "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "1", *TINY_DETR, *QUIET])
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and len(summary["losses"]) == 2
    assert all(math.isfinite(v) for v in summary["losses"])
    assert summary["eval"]["num_images"] == 2
    assert len(list((out / "checkpoint-2" / "stream_positions").iterdir())) == 2  # one position per process


# ViLT runs with the config as it is: its embeddings are one FSDP unit, used through their forward.
FSDP_RUNS = {
    "detr": ([], "train_detr_accelerate.py", TINY_DETR + ["--synthetic_train_size", "8"], DetrForObjectDetection),
    "vilt": ([], "train_vilt_accelerate.py",
             TINY_VILT + ["--synthetic_train_size", "8"], ViltForPreTraining),
}


@pytest.mark.parametrize("model", ["detr", pytest.param("vilt", marks=pytest.mark.slow)])
def test_fsdp_config_runs_the_script_and_saves_a_plain_model(tmp_path, model):
    """`accelerate launch --config_file configs/accelerate/fsdp_full_shard.yaml --num_processes 2` on CPU processes:
    the recipe shards with fully_shard (prepare_training) and the main process saves the gathered full model
    (model_for_saving), which loads as a plain model with every weight at its full shape."""
    launcher_options, script, options, cls = FSDP_RUNS[model]
    out = tmp_path / "run"
    _launch(["--config_file", str(ROOT / "configs" / "accelerate" / "fsdp_full_shard.yaml"), *launcher_options,
             "--num_processes", "2", str(SCRIPTS / script), "--output_dir", str(out), "--max_steps", "2",
             "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2", *options, *QUIET])
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and all(math.isfinite(v) for v in summary["losses"])
    loaded, info = cls.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    saved = load_file(str(out / "model.safetensors"))
    for name, parameter in loaded.state_dict().items():  # full shapes, not one process's shard
        assert tuple(saved[name].shape) == tuple(parameter.shape), name
