"""Train DETR's panoptic head on the synthetic panoptic shapes on a CPU and report panoptic quality.

    python scripts/train_detr_panoptic.py --steps 600 --head_steps 100 --num_threads 1 --output_file out/panoptic.json

A small DETR (timm backbone from scratch) learns things (circles, squares, triangles) and stuff (sky, grass, wall
regions); PQ on held-out images is measured with the untrained head and after each stage (stage 1: everything;
stage 2: frozen detector, mask head only, the paper's second stage). The summary is printed and written as JSON.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from detrvilt.training.detr.panoptic import run_panoptic_shapes


@dataclass
class PanopticArguments:
    num_train_images: int = field(default=200, metadata={"help": "Synthetic training images."})
    num_eval_images: int = field(default=40, metadata={"help": "Held-out synthetic images for PQ (another seed)."})
    image_size: int = field(default=64, metadata={"help": "Side of the square synthetic images, in pixels."})
    backbone: str = field(default="resnet18", metadata={"help": "timm backbone name (random weights)."})
    d_model: int = field(default=64, metadata={"help": "Transformer width (a multiple of 16)."})
    layers: int = field(default=2, metadata={"help": "Encoder and decoder layers."})
    num_queries: int = field(default=10, metadata={"help": "Object queries (segments per image at most)."})
    steps: int = field(default=300, metadata={"help": "Stage 1 steps: detector and mask head trained together."})
    head_steps: int = field(default=0, metadata={"help": "Stage 2 steps: frozen detector, mask head only."})
    batch_size: int = field(default=8, metadata={"help": "Images per step."})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate (all parameters)."})
    thresholds: list[float] = field(
        default_factory=lambda: [0.85, 0.5],
        metadata={"help": "Panoptic post-processing score thresholds to report PQ at (0.85 is the official value)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the data, the initialisation and the batch order."})
    num_threads: int = field(
        default=0,
        metadata={"help": "torch CPU threads for the run (0: torch's default). The numbers repeat exactly only at the "
                          "same thread count (and CPU kind): the reductions' order, hence the rounding, follows it."},
    )
    log_every: int = field(default=25, metadata={"help": "Print the mean loss every this many steps (0: never)."})
    output_file: str = field(default="", metadata={"help": "Write the summary here as JSON (nothing if empty)."})


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(PanopticArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    settings = asdict(args)
    output_file = settings.pop("output_file")
    num_threads, threads_before = settings.pop("num_threads"), torch.get_num_threads()
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0 (0: torch's default), got {num_threads}")
    try:
        if num_threads:
            torch.set_num_threads(num_threads)
        summary, _ = run_panoptic_shapes(**settings)
    finally:  # a caller in the same process (a test) keeps its thread count
        torch.set_num_threads(threads_before)
    text = json.dumps(summary, indent=2)
    print(text)
    if output_file:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(output_file).write_text(text + "\n")
    return summary


if __name__ == "__main__":
    main()
