"""Loss normalization across processes: two CPU processes (gloo) against one process on the global batch."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port

from detrvilt import DetrLoss

# Rank 0 gets 5 + 0 boxes, rank 1 gets 1 + 2: unequal counts are what a per-process normalization gets wrong.
COUNTS = [[5, 0], [1, 2]]


def global_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 10, 4, generator=generator)  # (layers, images, queries, classes + 1)
    boxes = torch.rand(2, 4, 10, 4, generator=generator) * 0.5 + 0.2
    labels = [
        {"class_labels": torch.randint(3, (n,), generator=generator),
         "boxes": torch.rand(n, 4, generator=generator) * 0.3 + 0.2}
        for n in sum(COUNTS, [])
    ]
    return logits, boxes, labels


def _worker(rank, world_size, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        logits, boxes, labels = global_batch()
        part = slice(2 * rank, 2 * rank + 2)
        boxes = boxes[:, part].clone().requires_grad_(True)
        _, loss_dict = DetrLoss(num_labels=3).compute(logits[:, part], boxes, labels[part])
        (5 * loss_dict["loss_bbox"] + 2 * loss_dict["loss_giou"]).backward()
        # Plain lists, not tensors: a tensor goes through shared memory that vanishes when this process exits.
        queue.put((rank, {k: v.item() for k, v in loss_dict.items()}, boxes.grad.tolist()))
    finally:
        dist.destroy_process_group()



def test_num_boxes_is_global_sum_over_world_size():
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=_worker, args=(rank, 2, port, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = dict((rank, (losses, grad)) for rank, losses, grad in (queue.get(timeout=120) for _ in processes))
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    logits, boxes, labels = global_batch()
    boxes.requires_grad_(True)
    _, single = DetrLoss(num_labels=3).compute(logits, boxes, labels)
    (5 * single["loss_bbox"] + 2 * single["loss_giou"]).backward()
    global_boxes = sum(map(sum, COUNTS))  # 8; the average per process is 4

    for rank in range(2):
        # Each process divides its own box-loss sum by the global count / world size (= 4), not by its own count.
        part = slice(2 * rank, 2 * rank + 2)
        _, local_unnormalized = DetrLoss(num_labels=3).compute(logits[:, part].detach(), boxes[:, part].detach(),
                                                               labels[part])
        local_sum = local_unnormalized["loss_bbox"].item() * max(sum(COUNTS[rank]), 1)
        assert abs(results[rank][0]["loss_bbox"] - local_sum / (global_boxes / 2)) < 1e-5
    # Averaging over processes (what DDP does with gradients) reproduces the single-process loss and gradient.
    for name in ("loss_bbox", "loss_giou", "loss_bbox_0", "loss_giou_0"):
        mean = (results[0][0][name] + results[1][0][name]) / 2
        assert abs(mean - single[name].item()) < 1e-5, name
    ddp_grad = torch.cat([torch.tensor(results[0][1]), torch.tensor(results[1][1])], dim=1) / 2
    torch.testing.assert_close(ddp_grad, boxes.grad)
