"""Two CPU processes (gloo) through Accelerate for ViLT: pretraining steps run in step on the shared training loop,
and the 2-process evaluation counts every example exactly once and equals the 1-process one."""

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
from accelerate import Accelerator
from conftest import free_port
from torch.utils.data import DataLoader

from detrvilt.data.vilt.collators import IndexedExamples
from detrvilt.data.vilt.synthetic import make_vilt_captions_dataset, make_vilt_vqa_dataset
from detrvilt.modeling.vilt import ViltConfig
from detrvilt.modeling.vilt.heads_vilt import ViltForPreTraining, ViltForQuestionAnswering
from detrvilt.training.loop import EpochShuffleSampler, LoopConfig, train_loop
from detrvilt.training.vilt.arguments import ViltDataArguments
from detrvilt.training.vilt.optimization import create_vilt_optimizer
from detrvilt.training.vilt.recipes import build_vilt_processor, evaluate_vilt, task_collator, vilt_loss_step

SIZE = 64
NUM_EVAL = 7  # odd, and not a multiple of 2 processes x batch 2: the last batch is padded with repeated examples
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=16,
            image_size=SIZE, max_position_embeddings=20)


def processor():
    return build_vilt_processor(ViltDataArguments(shortest_edge=SIZE, max_text_length=20), patch_size=16)


def vqa_model():
    torch.manual_seed(0)
    return ViltForQuestionAnswering(ViltConfig(**TINY, num_labels=14))


def evaluate_vqa(accelerator):
    from detrvilt.data.vilt.synthetic import VQA_ANSWERS

    evaluation = make_vilt_vqa_dataset(NUM_EVAL, seed=1, image_size=SIZE)
    return evaluate_vilt(accelerator, vqa_model(), "vqa", evaluation, processor(), batch_size=2,
                         id2label=dict(enumerate(VQA_ANSWERS)), progress_bar=False)


def evaluate_pretraining(accelerator, model):
    evaluation = make_vilt_captions_dataset(NUM_EVAL, seed=1, image_size=SIZE).select_columns(
        ["image", "image_id", "text"])
    return evaluate_vilt(accelerator, model, "pretrain", evaluation, processor(), batch_size=2, progress_bar=False)


def pretrain_two_steps(accelerator):
    dataset = IndexedExamples(make_vilt_captions_dataset(8, seed=0, image_size=SIZE))
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=task_collator("pretrain", processor()),
                        generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = ViltForPreTraining(ViltConfig(**TINY, pretraining_objectives=["mlm", "itm", "wpa"]))
    optimizer = create_vilt_optimizer(model, learning_rate=1e-3)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    losses = train_loop(accelerator, model, optimizer, loader, LoopConfig(max_steps=2, progress_bar=False),
                        sampler=sampler, loss_step=vilt_loss_step)
    checksum = sum(p.detach().double().sum().item() for p in accelerator.unwrap_model(model).parameters())
    return losses, checksum, model


def _worker(rank, world_size, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    try:
        accelerator = Accelerator(cpu=True)
        vqa = evaluate_vqa(accelerator)
        losses, checksum, model = pretrain_two_steps(accelerator)
        pretraining = evaluate_pretraining(accelerator, model)
        queue.put((rank, accelerator.num_processes, vqa, pretraining, losses, checksum, None))
    except Exception as error:  # report, so that the test fails with the reason instead of a timeout
        queue.put((rank, None, None, None, None, None, repr(error)))
        raise


def run_two_workers() -> dict:
    """Start `_worker` on ranks 0 and 1 and collect `{rank: (world, vqa, pretraining, losses, checksum)}`."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    workers = [context.Process(target=_worker, args=(rank, 2, port, queue)) for rank in range(2)]
    for worker in workers:
        worker.start()
    results = {}
    for _ in workers:
        rank, *values, error = queue.get(timeout=300)
        assert error is None, f"rank {rank}: {error}"
        results[rank] = tuple(values)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return results


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_two_processes_pretrain_and_evaluate_every_example_once():
    results = run_two_workers()

    single = evaluate_vqa(Accelerator(cpu=True))
    assert single["num_examples"] == single["num_records"] == NUM_EVAL
    for rank in range(2):
        world, vqa, pretraining, losses, checksum = results[rank]
        assert world == 2
        # gather_for_metrics drops the repeated examples of the padded last batch: every example exactly once
        assert vqa["num_records"] == vqa["num_examples"] == NUM_EVAL
        assert vqa["vqa_score"] == pytest.approx(single["vqa_score"], abs=1e-9)
        num_captions = len(make_vilt_captions_dataset(NUM_EVAL, seed=1, image_size=SIZE))
        assert pretraining["num_records"] == pretraining["num_pairs"] == num_captions
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    # Both processes log the same (reduced) losses and hold the same weights after the steps (gradients averaged).
    assert results[0][3] == pytest.approx(results[1][3], rel=1e-6)
    assert results[0][4] == pytest.approx(results[1][4], rel=1e-9)
    assert results[0][2] == results[1][2]  # the same pretraining metrics on both processes
