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
import datetime
import os
from collections.abc import Callable
from contextlib import nullcontext

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: nothing needs the network

import timm  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss  # noqa: E402

import detrvilt  # noqa: E402
from detrvilt.conversion import convert_transformers_detr, convert_transformers_state_dict  # noqa: E402
from side_by_side import Autocast, Row, Step, compare, device_name, format_table  # noqa: E402

CASES = ("infer", "train", "loss")
NUM_LABELS = 91


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"),
                        help="padded input size (default 800 1066 on cuda, 384 512 on cpu)")
    parser.add_argument("--backbone", default="resnet50", help="timm backbone name")
    parser.add_argument("--repeats", type=int, help="timed calls per implementation (default 20 on cuda, 5 on cpu)")
    parser.add_argument("--warmup", type=int, help="untimed calls per implementation (default 3 on cuda, 1 on cpu)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: torch.autocast for both")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--only", nargs="+", choices=CASES, default=list(CASES), help="run only these cases")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.image_size = tuple(args.image_size or ((800, 1066) if gpu else (384, 512)))
    args.repeats = args.repeats or (20 if gpu else 5)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    return args


def padded_batch(batch: int, size: tuple[int, int], device: torch.device, generator: torch.Generator):
    """Random images padded bottom/right to `size`; image i loses a quarter of its width and/or height
    (cycling full, 3/4 width, 3/4 height, both), so any batch > 1 exercises the masking."""
    height, width = size
    shrink = [(1.0, 1.0), (1.0, 0.75), (0.75, 1.0), (0.75, 0.75)]
    pixel_values = torch.zeros(batch, 3, height, width)
    pixel_mask = torch.zeros(batch, height, width, dtype=torch.long)
    for i in range(batch):
        h, w = int(height * shrink[i % 4][0]), int(width * shrink[i % 4][1])
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
    return pixel_values.to(device), pixel_mask.to(device)


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
    pixel_values, pixel_mask = padded_batch(2, (256, 320), device, torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = ours(pixel_values=pixel_values, pixel_mask=pixel_mask).logits
        b = theirs(pixel_values=pixel_values, pixel_mask=pixel_mask).logits
    return (a - b).abs().max().item()


def inference_step(model, pixel_values: torch.Tensor, pixel_mask: torch.Tensor, autocast: Autocast) -> Step:
    def step() -> None:
        with torch.no_grad(), autocast():
            model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    return step


def training_step(model, pixel_values: torch.Tensor, pixel_mask: torch.Tensor, labels: list[dict],
                  autocast: Autocast) -> Step:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        with autocast():
            loss = model(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # after the step, so that gradients count in this call's peak
    return step


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
    bf16 = args.dtype == "bf16"
    autocast: Autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    torch.manual_seed(0)
    ours, theirs = build_models(args.backbone, device)
    diff = max_logit_difference(ours, theirs, device)
    print(f"same weights: max |logits ours - transformers| = {diff:.2e} (fp32) "
          f"{'OK' if diff <= 1e-4 else 'MISMATCH, above 1e-4'}")
    generator = torch.Generator().manual_seed(0)
    rows = []
    if "infer" in args.only:  # before training, which changes the weights
        for batch in (1, 4):
            pixel_values, pixel_mask = padded_batch(batch, args.image_size, device, generator)
            rows.append(compare("inference", batch, inference_step(ours, pixel_values, pixel_mask, autocast),
                                inference_step(theirs, pixel_values, pixel_mask, autocast), args, device))
    if "train" in args.only:
        batch = 8 if device.type == "cuda" else 2
        pixel_values, pixel_mask = padded_batch(batch, args.image_size, device, generator)
        labels = random_labels(batch, device, generator)
        ours.train(), theirs.train()
        rows.append(compare("train step", batch, training_step(ours, pixel_values, pixel_mask, labels, autocast),
                            training_step(theirs, pixel_values, pixel_mask, labels, autocast), args, device))
    if "loss" in args.only:
        ours_step, theirs_step, relative = loss_steps(ours, theirs, device, autocast)
        print(f"same loss: |ours - transformers| / transformers = {relative:.1e} (matcher+loss case)")
        rows.append(compare("matcher+loss fwd+bwd", 8, ours_step, theirs_step, args, device))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    height, width = args.image_size
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, timm {timm.__version__} | "
          f"{device_name(device)} | {torch.get_num_threads()} threads | image {height}x{width} | "
          f"{args.backbone} | {args.dtype} | {args.warmup} warmup + {args.repeats} repeats | "
          f"{datetime.datetime.now():%Y-%m-%d %H:%M}")
    rows = run_cases(args, device)
    print(format_table(rows, args.markdown))


if __name__ == "__main__":
    main()
