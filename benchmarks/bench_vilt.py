"""Speed (and GPU memory) of detrvilt's ViLT against transformers' ViLT on the same weights, side by side.

A transformers `ViltForQuestionAnswering` (ViLT-B/32, 3129 VQAv2 answers) gets random weights and is converted with
`detrvilt.conversion.convert_transformers_vilt`; the script checks once that both give the same logits, then
times ``infer`` (eval, no_grad, batch 1 and 8) and ``train`` (one step: forward with soft-score labels, so each
model's own VQA loss, backward, AdamW; batch 8 on GPU, 4 on CPU). Inputs are the paper's VQA setting: images
padded to 384 x 640 (image i loses a quarter of its width and/or height, cycling full, 3/4 width, 3/4 height,
both, so batches > 1 exercise the masks) and questions of 6 to 40 word pieces padded to 40 tokens.

Calls alternate (ours, theirs, ours, ...) after a warmup, so drifts of clock or load hit both alike; the table gives
medians and ours/transformers (below 1: ours is faster). On CUDA it adds each call's peak memory above what was
allocated when the call began. Run: ``python benchmarks/bench_vilt.py --device cpu --repeats 3``; on a GPU,
``--dtype bf16 --markdown``.
"""

from __future__ import annotations

import argparse
import datetime
import os
from contextlib import nullcontext

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: nothing needs the network

import timm  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from detrvilt.conversion import convert_transformers_vilt  # noqa: E402
from side_by_side import Autocast, Row, Step, compare, device_name, format_table  # noqa: E402

CASES = ("infer", "train")
NUM_ANSWERS = 3129
TEXT_LENGTH = 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"), default=(384, 640),
                        help="padded input size, multiples of 32 (default 384 640)")
    parser.add_argument("--infer-batches", nargs="+", type=int, default=[1, 8], help="inference batch sizes")
    parser.add_argument("--train-batch", type=int, help="training-step batch size (default 8 on cuda, 4 on cpu)")
    parser.add_argument("--repeats", type=int, help="timed calls per implementation (default 20 on cuda, 3 on cpu)")
    parser.add_argument("--warmup", type=int, help="untimed calls per implementation (default 3 on cuda, 1 on cpu)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: torch.autocast for both")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--only", nargs="+", choices=CASES, default=list(CASES), help="run only these cases")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    if any(side % 32 for side in args.image_size):
        parser.error(f"--image-size must be multiples of the patch size 32, got {args.image_size}")
    args.train_batch = args.train_batch or (8 if gpu else 4)
    args.repeats = args.repeats or (20 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    return args


def vqa_batch(batch: int, size: tuple[int, int], device: torch.device, generator: torch.Generator,
              first_length: int = TEXT_LENGTH) -> dict:
    """Padded images with their pixel mask, right-padded questions with their attention mask. The first question
    has `first_length` tokens (default all 40, so that batch 1 has no padding), the others 6 to 40."""
    height, width = size
    shrink = [(1.0, 1.0), (1.0, 0.75), (0.75, 1.0), (0.75, 0.75)]
    pixel_values = torch.zeros(batch, 3, height, width)
    pixel_mask = torch.zeros(batch, height, width, dtype=torch.long)
    input_ids = torch.zeros(batch, TEXT_LENGTH, dtype=torch.long)
    attention_mask = torch.zeros(batch, TEXT_LENGTH, dtype=torch.long)
    for i in range(batch):
        h, w = int(height * shrink[i % 4][0]), int(width * shrink[i % 4][1])
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
        length = first_length if i == 0 else int(torch.randint(6, TEXT_LENGTH + 1, (1,), generator=generator))
        input_ids[i, :length] = torch.randint(1000, 30000, (length,), generator=generator)
        input_ids[i, 0], input_ids[i, length - 1] = 101, 102  # [CLS], [SEP]
        attention_mask[i, :length] = 1
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, pixel_mask=pixel_mask)
    return {name: value.to(device) for name, value in inputs.items()}


def soft_scores(batch: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """VQA targets: 1 to 3 answers per question with scores in {0.3, 0.6, 0.9, 1}."""
    labels = torch.zeros(batch, NUM_ANSWERS)
    for i in range(batch):
        answers = torch.randint(0, NUM_ANSWERS, (int(torch.randint(1, 4, (1,), generator=generator)),),
                                generator=generator)
        labels[i, answers] = torch.tensor([0.3, 0.6, 0.9, 1.0])[torch.randint(0, 4, answers.shape, generator=generator)]
    return labels.to(device)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Random N(0, 0.02) weights everywhere (transformers leaves the image [CLS] and positions at zero)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            value = torch.randn(parameter.shape, generator=generator) * 0.02
            if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                value += 1.0
            parameter.copy_(value)


def build_models(device: torch.device):
    """transformers' ViLT-B/32 VQA model with random weights and its conversion: (ours, theirs)."""
    theirs = transformers.ViltForQuestionAnswering(transformers.ViltConfig(num_labels=NUM_ANSWERS))
    randomize_(theirs)
    theirs = theirs.to(device).eval()
    return convert_transformers_vilt(theirs), theirs


def max_logit_difference(ours, theirs, device: torch.device) -> float:
    """Max abs difference of the fp32 logits on a padded batch of four (shows the weights are equal)."""
    inputs = vqa_batch(4, (256, 320), device, torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (ours(**inputs).logits - theirs(**inputs).logits).abs().max().item()


def inference_step(model, inputs: dict, autocast: Autocast) -> Step:
    def step() -> None:
        with torch.no_grad(), autocast():
            model(**inputs)
    return step


def training_step(model, inputs: dict, labels: torch.Tensor, autocast: Autocast) -> Step:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        with autocast():
            loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # after the step, so that gradients count in this call's peak
    return step


def run_cases(args, device: torch.device) -> list[Row]:
    bf16 = args.dtype == "bf16"
    autocast: Autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    ours, theirs = build_models(device)
    diff = max_logit_difference(ours, theirs, device)
    print(f"same weights: max |logits ours - transformers| = {diff:.2e} (fp32) "
          f"{'OK' if diff <= 1e-4 else 'MISMATCH, above 1e-4'}")
    generator = torch.Generator().manual_seed(0)
    rows = []
    if "infer" in args.only:  # before training, which changes the weights
        for batch in args.infer_batches:
            inputs = vqa_batch(batch, tuple(args.image_size), device, generator)
            rows.append(compare("VQA inference", batch, inference_step(ours, inputs, autocast),
                                inference_step(theirs, inputs, autocast), args, device))
    if "train" in args.only:
        inputs = vqa_batch(args.train_batch, tuple(args.image_size), device, generator)
        labels = soft_scores(args.train_batch, device, generator)
        ours.train(), theirs.train()
        rows.append(compare("VQA train step", args.train_batch, training_step(ours, inputs, labels, autocast),
                            training_step(theirs, inputs, labels, autocast), args, device))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    height, width = args.image_size
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, timm {timm.__version__} | "
          f"{device_name(device)} | {torch.get_num_threads()} threads | image {height}x{width}, {TEXT_LENGTH} tokens | "
          f"ViLT-B/32 VQA | {args.dtype} | {args.warmup} warmup + {args.repeats} repeats | "
          f"{datetime.datetime.now():%Y-%m-%d %H:%M}")
    rows = run_cases(args, device)
    print(format_table(rows, args.markdown))


if __name__ == "__main__":
    main()
