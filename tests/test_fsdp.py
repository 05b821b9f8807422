"""Sharded training (`detrvilt.training.sharding`): FSDP2 on two CPU processes (gloo) through the shared loop gives
the DDP run's losses and weights, resumes from its sharded checkpoint, and saves a plain Hub-ready model; the
contiguity fix that `fully_shard` needs; the Accelerate configs; and, behind the `gpu` marker, Accelerate's own FSDP2
and DeepSpeed ZeRO-2/3 plugins on one GPU."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from conftest import free_port, tiny_detr_config
from torch.distributed.fsdp import FSDPModule
from torch.utils.data import DataLoader
from vilt_testing import tiny_vilt_config, vilt_batch

from detrvilt import DetrForObjectDetection, DetrImageProcessor, ViltForPreTraining
from detrvilt.data import DetrDataCollator, make_shapes_dataset
from detrvilt.data.detr.sources import InMemoryDetectionDataset
from detrvilt.training import EpochShuffleSampler, LoopConfig, create_detr_optimizer, train_loop
from detrvilt.training.detr.optimization import create_step_scheduler
from detrvilt.training.recipes import make_accelerator, save_trained
from detrvilt.training.sharding import (
    SHARDED_STATE_DIR,
    fsdp_requested,
    layer_classes,
    make_parameters_contiguous,
    model_for_saving,
    prepare_training,
)

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "accelerate")
SIZE = 64


def processor():
    return DetrImageProcessor(size={"shortest_edge": SIZE, "longest_edge": SIZE}, num_labels=3)


def tiny_detr():
    torch.manual_seed(0)
    return DetrForObjectDetection(tiny_detr_config(num_labels=3, num_queries=6))


# ------------------------------------------------------------------------------------------------ one process


def test_contiguous_parameters_keep_values_objects_and_outputs():
    model = tiny_detr().eval()
    channels_last = [n for n, p in model.named_parameters() if not p.is_contiguous()]
    assert channels_last, "the backbone keeps channels-last convolution weights (what fully_shard refuses)"
    pixel_values = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        before = model(pixel_values=pixel_values)
    objects = {n: p for n, p in model.named_parameters()}
    values = {n: p.detach().clone() for n, p in objects.items()}
    assert make_parameters_contiguous(model) == channels_last
    assert all(p.is_contiguous() for p in model.parameters())
    for name, parameter in model.named_parameters():
        assert parameter is objects[name]  # an optimizer built before still holds them
        assert torch.equal(parameter, values[name])
    with torch.no_grad():
        after = model(pixel_values=pixel_values)
    torch.testing.assert_close(after.logits, before.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after.pred_boxes, before.pred_boxes, rtol=1e-5, atol=1e-5)


def test_layer_classes_follow_no_split_modules_and_name_missing_ones():
    detr = tiny_detr()
    assert {c.__name__ for c in layer_classes(detr)} == {"DetrConvBackbone", "DetrEncoderLayer", "DetrDecoderLayer"}
    vilt = ViltForPreTraining(tiny_vilt_config())
    assert {c.__name__ for c in layer_classes(vilt)} == {"ViltEmbeddings", "ViltLayer"}
    assert [c.__name__ for c in layer_classes(vilt, "ViltLayer")] == ["ViltLayer"]
    with pytest.raises(ValueError, match="DetrEncoderLayer"):
        layer_classes(vilt, "ViltLayer,DetrEncoderLayer")


def test_one_process_asked_for_fsdp_trains_unsharded(fresh_accelerate_state, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert fsdp_requested()
    accelerator = make_accelerator(cpu=True)
    model = tiny_detr()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, optimizer = prepare_training(accelerator, model, optimizer)
    assert not isinstance(model, FSDPModule)
    assert model_for_saving(accelerator, model) is model


def test_accelerate_configs_name_the_plugins():
    with open(os.path.join(CONFIGS, "fsdp_full_shard.yaml")) as handle:
        fsdp = yaml.safe_load(handle)
    assert fsdp["distributed_type"] == "FSDP"
    assert fsdp["fsdp_config"]["fsdp_version"] == 2
    assert fsdp["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    # No class list: accelerate raises for a listed class that a model lacks, so DETR and ViLT share this file by
    # leaving the layers to each model's `_no_split_modules` (test_layer_classes_follow_no_split_modules_...).
    assert "fsdp_transformer_layer_cls_to_wrap" not in fsdp["fsdp_config"]
    for name, stage in (("zero2.yaml", 2), ("zero3.yaml", 3)):
        with open(os.path.join(CONFIGS, name)) as handle:
            config = yaml.safe_load(handle)
        assert config["distributed_type"] == "DEEPSPEED"
        assert config["deepspeed_config"]["zero_stage"] == stage
    with open(os.path.join(CONFIGS, "zero3.yaml")) as handle:
        assert yaml.safe_load(handle)["deepspeed_config"]["zero3_save_16bit_model"] is True


def _launcher_environment(name: str, num_processes: int = 2) -> dict:
    """The environment `accelerate launch --config_file configs/accelerate/<name>.yaml` gives its processes
    (accelerate 1.15's own parsing and validation, without starting anything)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", os.path.join(CONFIGS, f"{name}.yaml"),
                                               "--num_processes", str(num_processes), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        # what `launch_command` sets before `deepspeed_launcher` (which itself needs deepspeed installed)
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


def test_accelerate_reads_the_configs_as_meant(monkeypatch):
    """accelerate's config loader and launcher accept each file, and the plugins built from the environment they give
    are the ones the files promise: FSDP2 full sharding by the models' own layers, ZeRO-2 and ZeRO-3 (gathering the
    16-bit weights on save). Needs no GPU and no deepspeed."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

    kinds = {"fsdp_full_shard": DistributedType.FSDP, "zero2": DistributedType.DEEPSPEED,
             "zero3": DistributedType.DEEPSPEED}
    for name, kind in kinds.items():
        assert load_config_from_file(os.path.join(CONFIGS, f"{name}.yaml")).distributed_type == kind
    fsdp_env = _launcher_environment("fsdp_full_shard")
    assert fsdp_env["ACCELERATE_USE_FSDP"] == "true" and fsdp_env["FSDP_VERSION"] == "2"
    assert "FSDP_TRANSFORMER_CLS_TO_WRAP" not in fsdp_env  # each model's _no_split_modules decide
    with monkeypatch.context() as patch:
        for key, value in fsdp_env.items():
            patch.setenv(key, value)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
        assert fsdp_requested()  # what sends prepare_training to its CPU path where accelerate makes MULTI_CPU
    for name, stage in (("zero2", 2), ("zero3", 3)):
        env = _launcher_environment(name)
        with monkeypatch.context() as patch:
            for key, value in env.items():
                if key.startswith("ACCELERATE_"):
                    patch.setenv(key, value)
            plugin = DeepSpeedPlugin()
        zero = plugin.deepspeed_config["zero_optimization"]
        assert plugin.zero_stage == stage and zero["stage"] == stage
        assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
        assert zero["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)
        # left to prepare_training: accumulation, clipping, micro-batch from the loop's settings
        assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
        assert plugin.deepspeed_config["gradient_clipping"] == "auto"
    assert "deepspeed" not in sys.modules  # the default tier never imports it


# ------------------------------------------------------------------------------------------------ two processes


def _train(fsdp: bool, max_steps: int, output_dir=None, checkpointing_steps=None, resume=None):
    """A tiny DETR trained with gradient accumulation, clipping and a learning-rate drop; returns losses, the full
    state dict (main process) and the plain model to save."""
    accelerator = make_accelerator(cpu=True)
    dataset = InMemoryDetectionDataset(make_shapes_dataset(8, seed=0, image_size=SIZE, min_objects=1, max_objects=3),
                                       processor(), flip_prob=0.5)
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=DetrDataCollator(),
                        generator=torch.Generator().manual_seed(0))
    model = tiny_detr()
    optimizer = create_detr_optimizer(model, learning_rate=1e-3, backbone_learning_rate=1e-4)
    scheduler = create_step_scheduler(optimizer, lr_drop_step=2)
    model, optimizer, loader, scheduler = prepare_training(accelerator, model, optimizer, loader, scheduler,
                                                           gradient_accumulation_steps=2, max_grad_norm=0.1,
                                                           fsdp_on_cpu=fsdp)
    assert isinstance(model, FSDPModule) == fsdp
    config = LoopConfig(max_steps=max_steps, gradient_accumulation_steps=2, max_grad_norm=0.1, progress_bar=False,
                        output_dir=output_dir, checkpointing_steps=checkpointing_steps, resume_from_checkpoint=resume)
    losses = train_loop(accelerator, model, optimizer, loader, config, scheduler=scheduler, sampler=sampler)
    plain = model_for_saving(accelerator, model)
    # numpy, not tensors: a tensor sent through a multiprocessing queue is shared, and gone once its process ends
    state = None if plain is None else {k: v.detach().numpy().copy() for k, v in plain.state_dict().items()}
    return accelerator, losses, state, plain, optimizer.param_groups[0]["lr"]


def _fsdp_worker(rank, port, output_dir, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    try:
        _, ddp_losses, ddp_state, _, ddp_lr = _train(fsdp=False, max_steps=3)
        # The FSDP run saves a checkpoint after step 2 on its way; the resume starts from there.
        checkpoints = os.path.join(output_dir, "checkpoints")
        accelerator, fsdp_losses, fsdp_state, plain, fsdp_lr = _train(fsdp=True, max_steps=3, output_dir=checkpoints,
                                                                      checkpointing_steps=2)
        if accelerator.is_main_process:
            save_trained(plain, processor(), os.path.join(output_dir, "fsdp_model"))
        accelerator.wait_for_everyone()
        _, resumed_losses, resumed_state, _, _ = _train(fsdp=True, max_steps=3, output_dir=checkpoints,
                                                        resume=os.path.join(checkpoints, "checkpoint-2"))
        queue.put((rank, ddp_losses, fsdp_losses, resumed_losses, ddp_state, fsdp_state, resumed_state,
                   (ddp_lr, fsdp_lr), None))
    except Exception as error:  # report, so that the test fails with the reason instead of a timeout
        queue.put((rank, None, None, None, None, None, None, None, repr(error)))
        raise


def test_fsdp_on_two_cpu_processes_equals_ddp_and_resumes(fresh_accelerate_state, tmp_path):
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=_fsdp_worker, args=(rank, port, str(tmp_path), queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = {}
    for _ in processes:
        rank, *values, error = queue.get(timeout=280)
        assert error is None, f"rank {rank}: {error}"
        results[rank] = values
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    ddp_losses, fsdp_losses, resumed_losses, ddp_state, fsdp_state, resumed_state, (ddp_lr, fsdp_lr) = results[0]
    assert len(fsdp_losses) == 3 and all(math.isfinite(v) for v in fsdp_losses)
    # Same losses as DDP (the gradient is reduced by reduce-scatter instead of all-reduce: float rounding only).
    assert fsdp_losses == pytest.approx(ddp_losses, rel=1e-5)
    assert results[1][1] == pytest.approx(fsdp_losses, rel=1e-6)  # every process logs the reduced loss
    # The learning rate dropped once after step 2 with 2 processes (one scheduler step per optimizer step).
    assert fsdp_lr == pytest.approx(ddp_lr) == pytest.approx(1e-4)
    # The full weights (gathered from the shards) equal DDP's; the other process gets none.
    assert results[1][4] is None and results[1][5] is None
    assert fsdp_state.keys() == ddp_state.keys()
    ddp_state, fsdp_state, resumed_state = ({k: torch.from_numpy(v) for k, v in state.items()}
                                            for state in (ddp_state, fsdp_state, resumed_state))
    for name, value in ddp_state.items():
        torch.testing.assert_close(fsdp_state[name], value, rtol=1e-4, atol=1e-6, msg=name)
    # Resumed after step 2 (checkpoint with torch.distributed.checkpoint shards): the uninterrupted run.
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "checkpoint-2", SHARDED_STATE_DIR))
    assert resumed_losses == pytest.approx(fsdp_losses, rel=1e-6)
    for name, value in fsdp_state.items():
        torch.testing.assert_close(resumed_state[name], value, rtol=1e-6, atol=1e-7, msg=name)
    # The saved folder is a plain model with those weights.
    loaded = DetrForObjectDetection.from_pretrained(os.path.join(tmp_path, "fsdp_model"))
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, fsdp_state[name], msg=name)


def _vilt_train(fsdp: bool):
    accelerator = make_accelerator(cpu=True)
    torch.manual_seed(0)
    model = ViltForPreTraining(tiny_vilt_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rank = accelerator.process_index
    batches = []
    for step in range(3):
        batch = vilt_batch(seed=10 * step + rank)
        labels = batch["input_ids"].clone()
        labels[:, ::2] = -100
        batches.append({**batch, "labels": labels, "itm_labels": torch.tensor([1, 0])})
    model, optimizer = prepare_training(accelerator, model, optimizer, fsdp_on_cpu=fsdp)
    losses = train_loop(accelerator, model, optimizer, batches, LoopConfig(max_steps=3, progress_bar=False),
                        describe_batch=lambda batch: [])
    return losses


def _vilt_worker(rank, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    try:
        queue.put((rank, _vilt_train(False), _vilt_train(True), None))
    except Exception as error:
        queue.put((rank, None, None, repr(error)))
        raise


@pytest.mark.slow
def test_vilt_fsdp_on_two_cpu_processes_equals_ddp(fresh_accelerate_state):
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=_vilt_worker, args=(rank, port, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = {}
    for _ in processes:
        rank, ddp, fsdp, error = queue.get(timeout=280)
        assert error is None, f"rank {rank}: {error}"
        results[rank] = (ddp, fsdp)
    for process in processes:
        process.join(timeout=60)
    ddp, fsdp = results[0]
    assert fsdp == pytest.approx(ddp, rel=1e-5)


# ------------------------------------------------------------------------------------------------ launchers

SCRIPT = os.path.join(os.path.dirname(__file__), "sharding_script.py")


def _launch(config: str | None, output_dir, num_processes: int, *script_args, cpu: bool = False) -> dict:
    """`tests/sharding_script.py` under `accelerate launch` (with `configs/accelerate/<config>.yaml`), or plain."""
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__), "OMP_NUM_THREADS": "1"}
    if config is None:
        command = [sys.executable, SCRIPT]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   os.path.join(CONFIGS, f"{config}.yaml"), "--num_processes", str(num_processes),
                   "--main_process_port", str(free_port()), SCRIPT]
    command += ["--output_dir", str(output_dir), *script_args] + (["--cpu"] if cpu else [])
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(os.path.join(output_dir, "result.json")) as handle:
        return json.load(handle)


@pytest.mark.slow
def test_fsdp_config_launches_the_cpu_path(tmp_path):
    """`accelerate launch --config_file configs/accelerate/fsdp_full_shard.yaml` on a machine without a GPU: accelerate
    makes MULTI_CPU, prepare_training shards with fully_shard, and the script ends with a plain saved model."""
    result = _launch("fsdp_full_shard", tmp_path, 2, "--max_steps", "2")
    assert result["distributed_type"] == "MULTI_CPU" and result["num_processes"] == 2
    assert result["fsdp"] and result["parameter_type"] == "DTensor"
    assert len(result["losses"]) == 2 and all(math.isfinite(v) for v in result["losses"])
    DetrForObjectDetection.from_pretrained(tmp_path / "model")


@pytest.mark.gpu
@pytest.mark.parametrize(("config", "kind"), [("fsdp_full_shard", "FSDP"), ("zero2", "DEEPSPEED"),
                                              ("zero3", "DEEPSPEED")])
def test_accelerate_plugins_train_like_plain_resume_and_save(tmp_path, config, kind):
    """Accelerate's own FSDP2 and DeepSpeed ZeRO-2/3 on the GPUs there are (1 or 2): the losses of the unsharded run
    on one GPU (same global batch only with one process), a resume from their own checkpoints, and a plain Hub
    folder gathered from the shards."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if kind == "DEEPSPEED":
        pytest.importorskip("deepspeed")
    processes = min(2, torch.cuda.device_count())
    plain = _launch(None, tmp_path / "plain", 1, "--max_steps", "4")
    sharded = _launch(config, tmp_path / "sharded", processes, "--max_steps", "4")
    assert sharded["distributed_type"] == kind and sharded["num_processes"] == processes
    if processes == 1:
        assert sharded["losses"] == pytest.approx(plain["losses"], rel=1e-3)
    _launch(config, tmp_path / "resumed", processes, "--max_steps", "2", "--checkpointing_steps", "2")
    resumed = _launch(config, tmp_path / "resumed", processes, "--max_steps", "4", "--resume_from_checkpoint",
                      "latest")
    assert resumed["losses"] == pytest.approx(sharded["losses"], rel=1e-5)
    saved = DetrForObjectDetection.from_pretrained(tmp_path / "sharded" / "model")
    assert all(torch.isfinite(p).all() for p in saved.parameters())
