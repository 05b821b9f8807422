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
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: nothing needs the network

import torch  # noqa: E402
import transformers  # noqa: E402

from detrvilt.conversion import convert_transformers_vilt  # noqa: E402
from side_by_side import (  # noqa: E402
    Row,
    autocast_for,
    compare_models,
    logit_difference,
    model_parser,
    padded_images,
    parse_model_args,
    report_same_weights,
    run_model_benchmark,
)

CASES = ("infer", "train")
NUM_ANSWERS = 3129
TEXT_LENGTH = 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = model_parser(__doc__)
    parser.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"), default=(384, 640),
                        help="padded input size, multiples of 32 (default 384 640)")
    parser.add_argument("--infer-batches", nargs="+", type=int, default=[1, 8], help="inference batch sizes")
    parser.add_argument("--train-batch", type=int, help="training-step batch size (default 8 on cuda, 4 on cpu)")
    args = parse_model_args(parser, argv, CASES, cpu_repeats=3)
    if any(side % 32 for side in args.image_size):
        parser.error(f"--image-size must be multiples of the patch size 32, got {args.image_size}")
    args.train_batch = args.train_batch or (8 if args.device == "cuda" else 4)
    return args


def vqa_batch(batch: int, size: tuple[int, int], device: torch.device, generator: torch.Generator,
              first_length: int = TEXT_LENGTH) -> dict:
    """Padded images with their pixel mask (`padded_images`), right-padded questions with their attention mask
    (int64, (B, 40)). The first question has `first_length` tokens (default all 40, so that batch 1 has no
    padding), the others 6 to 40."""
    input_ids = torch.zeros(batch, TEXT_LENGTH, dtype=torch.long)
    attention_mask = torch.zeros(batch, TEXT_LENGTH, dtype=torch.long)

    def draw_question(i: int) -> None:
        length = first_length if i == 0 else int(torch.randint(6, TEXT_LENGTH + 1, (1,), generator=generator))
        input_ids[i, :length] = torch.randint(1000, 30000, (length,), generator=generator)
        input_ids[i, 0], input_ids[i, length - 1] = 101, 102  # [CLS], [SEP]
        attention_mask[i, :length] = 1

    images = padded_images(batch, size, device, generator, after_each=draw_question)
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device), **images}


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
    return logit_difference(ours, theirs, vqa_batch(4, (256, 320), device, torch.Generator().manual_seed(1)))


def run_cases(args, device: torch.device) -> list[Row]:
    autocast = autocast_for(device, args.dtype)
    ours, theirs = build_models(device)
    report_same_weights(max_logit_difference(ours, theirs, device))
    generator = torch.Generator().manual_seed(0)
    rows = []
    size = tuple(args.image_size)
    if "infer" in args.only:  # before training, which changes the weights
        batches = [(batch, vqa_batch(batch, size, device, generator)) for batch in args.infer_batches]
        rows += compare_models("VQA inference", batches, ours, theirs, autocast, args, device)
    if "train" in args.only:
        inputs = vqa_batch(args.train_batch, size, device, generator)
        inputs["labels"] = soft_scores(args.train_batch, device, generator)
        ours.train(), theirs.train()
        rows += compare_models("VQA train step", [(args.train_batch, inputs)], ours, theirs, autocast, args, device,
                               train=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    height, width = args.image_size
    run_model_benchmark(args, run_cases, f"image {height}x{width}, {TEXT_LENGTH} tokens | ViLT-B/32 VQA")


if __name__ == "__main__":
    main()
