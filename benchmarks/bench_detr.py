"""Speed (and GPU memory) of detrvilt's DETR against transformers' DETR on the same weights, side by side.

A transformers `DetrForObjectDetection` (timm backbone, auxiliary losses, 91 classes) gets random weights and is
converted with `detrvilt.conversion.convert_transformers_detr`; the script checks once that both give the same
inference logits, then times: ``infer`` (eval, no_grad, batch 1 and 4), ``train`` (one step: forward with labels,
so each model's own Hungarian loss, backward, AdamW; batch 2 on CPU, 8 on GPU) and ``loss`` (matcher + loss alone,
forward and backward, on identical predictions of 6 layers x 8 images x 100 queries: transformers'
`ForObjectDetectionLoss` against our `DetrLoss.compute`). Batches are padded bottom/right with a `pixel_mask`.

Calls alternate (ours, theirs, ours, ...) after a warmup, so drifts of clock or load hit both alike; the table gives
medians and ours/transformers (below 1: ours is faster). On CUDA it adds each call's peak memory above what was
allocated when the call began (both models stay resident, so an absolute peak would count the other's weights).
Run: ``python benchmarks/bench_detr.py --device cpu --repeats 5``; on a GPU, ``--dtype bf16 --markdown``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: nothing needs the network

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss  # noqa: E402

import detrvilt  # noqa: E402
from detrvilt.conversion import convert_transformers_detr, convert_transformers_state_dict  # noqa: E402
from side_by_side import (  # noqa: E402
    Autocast,
    Row,
    Step,
    autocast_for,
    compare,
    compare_models,
    logit_difference,
    model_parser,
    padded_images,
    parse_model_args,
    report_same_weights,
    run_model_benchmark,
)

CASES = ("infer", "train", "loss")
NUM_LABELS = 91


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = model_parser(__doc__)
    parser.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"),
                        help="padded input size (default 800 1066 on cuda, 384 512 on cpu)")
    parser.add_argument("--backbone", default="resnet50", help="timm backbone name")
    args = parse_model_args(parser, argv, CASES, cpu_repeats=5)
    args.image_size = tuple(args.image_size or ((800, 1066) if args.device == "cuda" else (384, 512)))
    return args


def random_labels(batch: int, device: torch.device, generator: torch.Generator) -> list[dict]:
    """5 to 20 boxes per image, normalized (cx, cy, w, h) lying inside the image."""
    labels = []
    for _ in range(batch):
        n = int(torch.randint(5, 21, (1,), generator=generator))
        wh = 0.05 + 0.45 * torch.rand(n, 2, generator=generator)
        center = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=generator)
        classes = torch.randint(0, NUM_LABELS, (n,), generator=generator)
        labels.append({"class_labels": classes.to(device), "boxes": torch.cat([center, wh], 1).to(device)})
    return labels


def build_models(backbone: str, device: torch.device):
    """transformers' DETR with random weights and its conversion: (ours, theirs)."""
    config = transformers.DetrConfig(backbone=backbone, use_timm_backbone=True, auxiliary_loss=True,
                                     num_labels=NUM_LABELS)
    theirs = transformers.DetrForObjectDetection(config).to(device).eval()
    ours = convert_transformers_detr(theirs)
    # transformers 5.x trains the whole timm backbone; ours freezes the stem and first stage (the paper's
    # setting). Give theirs our flags so that both backward passes and optimizers do the same work.
    ours_params = dict(ours.named_parameters())
    for name, parameter in convert_transformers_state_dict(dict(theirs.named_parameters())).items():
        parameter.requires_grad_(ours_params[name].requires_grad)
    return ours, theirs


def max_logit_difference(ours, theirs, device: torch.device) -> float:
    """Max abs difference of the fp32 inference logits on a padded batch of two (shows the weights are equal)."""
    return logit_difference(ours, theirs, padded_images(2, (256, 320), device, torch.Generator().manual_seed(1)))


def loss_steps(ours_model, theirs_model, device: torch.device, autocast: Autocast) -> tuple[Step, Step, float]:
    """Forward+backward of each loss on the same predictions; also the relative difference of the two losses."""
    generator = torch.Generator().manual_seed(2)
    layers = ours_model.config.decoder_layers
    logits = torch.randn(layers, 8, 100, NUM_LABELS + 1, generator=generator).to(device)
    boxes = torch.randn(layers, 8, 100, 4, generator=generator).sigmoid().to(device)
    labels = random_labels(8, device, generator)
    # Separate leaves per implementation, so that neither sees the other's gradients.
    ours_leaves = [t.clone().requires_grad_() for t in (logits, boxes)]
    theirs_leaves = [t.clone().requires_grad_() for t in (logits, boxes)]

    def ours_loss() -> torch.Tensor:
        with autocast():
            return detrvilt.DetrLoss.from_config(ours_model.config).compute(*ours_leaves, labels)[0]

    def theirs_loss() -> torch.Tensor:
        lg, bx = theirs_leaves
        with autocast():  # it takes the full stacks and drops their last layer itself
            return ForObjectDetectionLoss(lg[-1], labels, device, bx[-1], theirs_model.config, lg, bx)[0]

    def backward(loss_fn: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> Step:
        def step() -> None:
            loss_fn().backward()
            for leaf in leaves:
                leaf.grad = None
        return step

    with torch.no_grad():
        a, b = ours_loss().item(), theirs_loss().item()
    return backward(ours_loss, ours_leaves), backward(theirs_loss, theirs_leaves), abs(a - b) / abs(b)


def run_cases(args, device: torch.device) -> list[Row]:
    autocast = autocast_for(device, args.dtype)
    torch.manual_seed(0)
    ours, theirs = build_models(args.backbone, device)
    report_same_weights(max_logit_difference(ours, theirs, device))
    generator = torch.Generator().manual_seed(0)
    rows = []
    if "infer" in args.only:  # before training, which changes the weights
        batches = [(batch, padded_images(batch, args.image_size, device, generator)) for batch in (1, 4)]
        rows += compare_models("inference", batches, ours, theirs, autocast, args, device)
    if "train" in args.only:
        batch = 8 if device.type == "cuda" else 2
        inputs = padded_images(batch, args.image_size, device, generator)
        inputs["labels"] = random_labels(batch, device, generator)
        ours.train(), theirs.train()
        rows += compare_models("train step", [(batch, inputs)], ours, theirs, autocast, args, device, train=True)
    if "loss" in args.only:
        ours_step, theirs_step, relative = loss_steps(ours, theirs, device, autocast)
        print(f"same loss: |ours - transformers| / transformers = {relative:.1e} (matcher+loss case)")
        rows.append(compare("matcher+loss fwd+bwd", 8, ours_step, theirs_step, args, device))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    height, width = args.image_size
    run_model_benchmark(args, run_cases, f"image {height}x{width} | {args.backbone}")


if __name__ == "__main__":
    main()
