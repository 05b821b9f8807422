"""Two CPU processes (gloo) through Accelerate: training steps run in step, and the 2-process COCO evaluation of a
fixed model equals the 1-process one, every image counted exactly once, in our Accelerate loop and in `DetrTrainer`."""

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
from accelerate import Accelerator
from conftest import free_port, tiny_detr_config
from torch.utils.data import DataLoader

from detrvilt import DetrForObjectDetection, DetrImageProcessor
from detrvilt.data import DetrDataCollator, make_shapes_dataset
from detrvilt.data.detr.sources import InMemoryDetectionDataset
from detrvilt.training import (
    DetrCocoMetrics,
    DetrTrainer,
    EpochShuffleSampler,
    LoopConfig,
    create_detr_optimizer,
    train_loop,
)
from detrvilt.training.detr.arguments import DetrTrainingArguments
from detrvilt.training.detr.recipes import evaluate_model

SIZE = 64
NUM_EVAL = 7  # odd, and not a multiple of 2 processes x batch 2: the last batch is padded with repeated images


def processor():
    return DetrImageProcessor(size={"shortest_edge": SIZE, "longest_edge": SIZE}, num_labels=3)


def fixed_model():
    torch.manual_seed(0)
    config = tiny_detr_config(num_labels=3, num_queries=6, freeze_batch_norm=False, freeze_backbone_stem=False)
    return DetrForObjectDetection(config)


def eval_set():
    return InMemoryDetectionDataset(make_shapes_dataset(NUM_EVAL, seed=1, image_size=SIZE, max_objects=3), processor())


def trainer_evaluation(output_dir):
    args = DetrTrainingArguments(output_dir=output_dir, per_device_eval_batch_size=2, report_to=[], use_cpu=True,
                                 disable_tqdm=True, dataloader_num_workers=0)
    trainer = DetrTrainer(model=fixed_model(), args=args, eval_dataset=eval_set(), data_collator=DetrDataCollator(),
                          compute_metrics=DetrCocoMetrics(processor()))
    return {k.removeprefix("eval_"): v for k, v in trainer.evaluate().items()}


def train_two_steps(accelerator):
    dataset = InMemoryDetectionDataset(make_shapes_dataset(8, seed=0, image_size=SIZE, max_objects=3), processor(),
                                       flip_prob=0.5)
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=DetrDataCollator(),
                        generator=torch.Generator().manual_seed(0))
    model = fixed_model()
    optimizer = create_detr_optimizer(model, learning_rate=1e-3, backbone_learning_rate=1e-3)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    losses = train_loop(accelerator, model, optimizer, loader, LoopConfig(max_steps=2, progress_bar=False),
                        sampler=sampler)
    checksum = sum(p.detach().double().sum().item() for p in accelerator.unwrap_model(model).parameters())
    return losses, checksum


def _worker(rank, world_size, port, output_dir, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    try:
        accelerator = Accelerator(cpu=True)
        scores = evaluate_model(accelerator, fixed_model(), eval_set(), processor(), batch_size=2, progress_bar=False)
        losses, checksum = train_two_steps(accelerator)
        trainer_scores = trainer_evaluation(output_dir)
        queue.put((rank, accelerator.num_processes, scores, losses, checksum, trainer_scores, None))
    except Exception as error:  # report, so that the test fails with the reason instead of a timeout
        queue.put((rank, None, None, None, None, None, repr(error)))
        raise




def test_two_processes_train_and_evaluate_like_one(fresh_accelerate_state, tmp_path):
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=_worker, args=(rank, 2, port, str(tmp_path), queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = {}
    for _ in processes:
        rank, world, scores, losses, checksum, trainer_scores, error = queue.get(timeout=240)
        assert error is None, f"rank {rank}: {error}"
        results[rank] = (world, scores, losses, checksum, trainer_scores)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    single = evaluate_model(Accelerator(cpu=True), fixed_model(), eval_set(), processor(), batch_size=2,
                            progress_bar=False)
    assert single["num_images"] == NUM_EVAL
    for rank in range(2):
        world, scores, losses, checksum, trainer_scores = results[rank]
        assert world == 2
        assert scores["num_images"] == NUM_EVAL  # every image once, although the last batch was padded
        assert trainer_scores["num_images"] == NUM_EVAL
        for key in ("map", "map_50", "map_75", "mar_1", "mar_10", "mar_100"):
            assert scores[key] == pytest.approx(single[key], abs=1e-6), key
            assert trainer_scores[key] == pytest.approx(single[key], abs=1e-6), key
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    # Both processes log the same (reduced) losses and hold the same weights after the steps (gradients averaged).
    assert results[0][2] == pytest.approx(results[1][2], rel=1e-6)
    assert results[0][3] == pytest.approx(results[1][3], rel=1e-9)
