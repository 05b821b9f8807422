"""The README's demo: a small DETR trained from scratch on the synthetic shapes set on the CPU in about ten minutes.

Why this recipe and not the paper's: the paper trains 500 epochs on COCO with an ImageNet backbone at lr 1e-5. From
scratch on a CPU budget of a few thousand steps, the backbone learns at the transformer's rate (2e-4), the images are
small (64 pixels) with a dilated last stage (DC5, a 4x4 feature map), the transformer is narrow (d_model 128) and
shallow in the encoder (2 layers, 16 tokens) but has the paper's 6 decoder layers: decoder layers cost little here and
are what removes duplicate detections (with 2 of them the model kept several confident boxes per object). With at
most 3 objects per image, 6 queries and a "no object" weight of 0.3 keep the classes balanced as the paper's 100
queries and 0.1 do on COCO; 10 queries with 0.1 left many duplicates, 10 with 0.5 lost recall. No dropout, a short
warmup, a drop of the learning rate at 80% of the steps. The measured alternatives are in the README.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from ...viz import detr_demo_pictures
from ..plots import plot_loss_curve
from ..recipes import save_trained
from .arguments import DetrAccelerateArguments, DetrDataArguments, DetrModelArguments
from .metrics import reference_from_label
from .recipes import format_coco_table, run_accelerate_training

TARGETS = {"map_50": 0.7, "map": 0.4}


@dataclass
class DemoArguments:
    """Settings of the demo (defaults: the recipe the README's numbers come from)."""

    output_dir: str = field(default="outputs/demo", metadata={
        "help": "Where the pictures, the Hub-ready model folder (model/) and demo_results.json go."})
    max_steps: int = field(default=4500, metadata={"help": "Optimizer steps (at most; see --max_train_minutes)."})
    max_train_minutes: float | None = field(default=None, metadata={
        "help": "Optional time budget: stop after the step during which this many minutes have passed (by default the "
                "demo runs its max_steps, so that its numbers repeat on any machine)."})
    batch_size: int = field(default=8, metadata={"help": "Training images per step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate (backbone and transformer)."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warmup steps."})
    lr_drop_step: int = field(default=3600, metadata={"help": "Step after which the learning rate is divided by 10."})
    image_size: int = field(default=64, metadata={"help": "Side of the synthetic images (pixels)."})
    train_images: int = field(default=5000, metadata={"help": "Synthetic training images (seed 0)."})
    eval_images: int = field(default=200, metadata={"help": "Held-out synthetic validation images (seed 1)."})
    max_objects: int = field(default=3, metadata={"help": "Most objects per synthetic image (at least 1)."})
    min_object_size: float = field(default=0.2, metadata={
        "help": "Smallest object side as a fraction of the image side (the largest is 0.5)."})
    backbone: str = field(default="resnet10t", metadata={"help": "timm backbone, trained from scratch."})
    d_model: int = field(default=128, metadata={"help": "Width of the transformer."})
    encoder_layers: int = field(default=2, metadata={"help": "Transformer encoder layers."})
    decoder_layers: int = field(default=6, metadata={"help": "Transformer decoder layers."})
    num_queries: int = field(default=6, metadata={"help": "Object queries (at most this many detections per image)."})
    eos_coefficient: float = field(default=0.3, metadata={"help": "Weight of the 'no object' class in the loss."})
    num_query_groups: int = field(default=1, metadata={
        "help": "Group DETR: groups of object queries in training, each matched one-to-one on its own (1: off); the "
                "saved model is a plain DETR."})
    hybrid_queries: int = field(default=0, metadata={
        "help": "H-DETR hybrid matching: training-only one-to-many queries (0: off); the saved model is a plain DETR."})
    hybrid_repeats: int = field(default=6, metadata={"help": "Repeats of each target for the hybrid branch."})
    num_threads: int = field(default=2, metadata={"help": "CPU threads for torch."})
    seed: int = field(default=0, metadata={"help": "Seed of the model, the shuffling and the flips."})
    progress_bar: bool = field(default=True, metadata={"help": "Show progress bars."})
    vilt: bool = field(default=True, metadata={
        "help": "After DETR, run the ViLT demo too (pretraining on synthetic captions, VQA fine-tuning, answers to "
                "questions about a new picture, word-patch alignment) into output_dir/vilt; its own settings: "
                "`python -m detrvilt.training.vilt.demo --help`."})


def demo_configuration(args: DemoArguments):
    """The three argument dataclasses of the Accelerate recipe that the demo runs."""
    model_args = DetrModelArguments(
        backbone=args.backbone, dilation=True, freeze_backbone_stem=False, freeze_batch_norm=False,
        d_model=args.d_model, encoder_layers=args.encoder_layers, decoder_layers=args.decoder_layers,
        attention_heads=8, ffn_dim=4 * args.d_model, num_queries=args.num_queries, dropout=0.0,
        eos_coefficient=args.eos_coefficient, num_query_groups=args.num_query_groups,
        hybrid_queries=args.hybrid_queries, hybrid_repeats=args.hybrid_repeats)
    data_args = DetrDataArguments(
        dataset="synthetic", synthetic_train_size=args.train_images, synthetic_eval_size=args.eval_images,
        synthetic_image_size=args.image_size, synthetic_min_objects=1, synthetic_max_objects=args.max_objects,
        synthetic_min_object_size=args.min_object_size, synthetic_max_object_size=0.5, augment=True, in_memory=True)
    train_args = DetrAccelerateArguments(
        output_dir=os.path.join(args.output_dir, "model"), max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=50,
        learning_rate=args.learning_rate, backbone_learning_rate=args.learning_rate, weight_decay=1e-4,
        max_grad_norm=0.1, warmup_steps=args.warmup_steps, lr_drop_step=args.lr_drop_step, seed=args.seed,
        logging_steps=25, progress_bar=args.progress_bar, max_train_minutes=args.max_train_minutes)
    return model_args, data_args, train_args


def check_reload(model, model_dir: str, eval_set, num_images: int = 16) -> float:
    """Reload `model_dir` through the Auto classes and return the largest difference of logits and boxes against
    `model` on the first validation images; raises `AssertionError` above 1e-5."""
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    from ...data import DetrDataCollator

    reloaded = AutoModelForObjectDetection.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    if type(reloaded).__name__ != type(model).__name__:
        raise AssertionError(f"reloaded a {type(reloaded).__name__}, expected {type(model).__name__}")
    if type(processor).__name__ != "DetrviltDetrImageProcessor":
        raise AssertionError(f"reloaded processor is a {type(processor).__name__}")
    batch = DetrDataCollator()([eval_set[i] for i in range(min(num_images, len(eval_set)))])
    model.eval()
    with torch.no_grad():
        before = model(batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        after = reloaded(batch["pixel_values"], pixel_mask=batch["pixel_mask"])
    difference = max((before.logits - after.logits).abs().max().item(),
                     (before.pred_boxes - after.pred_boxes).abs().max().item())
    if difference > 1e-5:
        raise AssertionError(f"the reloaded model differs from the trained one by {difference:.3g}")
    return difference


def run_vilt_part(args: DemoArguments) -> dict:
    """The ViLT half of the demo, with its default settings, into `output_dir/vilt`."""
    from ..vilt.demo import ViltDemoArguments, run_vilt_demo

    vilt_args = ViltDemoArguments(output_dir=os.path.join(args.output_dir, "vilt"), num_threads=args.num_threads,
                                  progress_bar=args.progress_bar)
    result = run_vilt_demo(vilt_args)
    return {k: v for k, v in result.items() if k not in ("model", "processor", "image", "pretrained_model")}


def run_demo(args: DemoArguments) -> dict:
    """Run the whole demo; returns (and writes to `output_dir/demo_results.json`) the numbers it reached."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(args.num_threads)
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.perf_counter()
    model_args, data_args, train_args = demo_configuration(args)
    print(f"demo: training a DETR ({args.backbone} DC5, d_model {args.d_model}, {args.encoder_layers}+"
          f"{args.decoder_layers} layers, {args.num_queries} queries) from scratch for "
          f"{args.max_steps} steps of {args.batch_size} synthetic {args.image_size}-pixel images, on the CPU")
    result = run_accelerate_training(model_args, data_args, train_args, accelerator=Accelerator(cpu=True))
    scores = result["eval"]
    model, processor, eval_set = result["model"], result["processor"], result["eval_set"]
    if model.config.num_training_queries:
        # Trained with query groups / a hybrid branch: ship the inference model alone, a plain DETR (the training
        # summary written next to it stays).
        model = model.to_plain_detr()
        save_trained(model, processor, train_args.output_dir)

    plot_loss_curve(result["log"], os.path.join(args.output_dir, "loss_curve.png"))
    eval_rows = result["eval_dataset"]
    shown = list(range(min(12, len(eval_set))))
    pictures = detr_demo_pictures(
        model.eval(), processor, [eval_rows[i]["image"] for i in shown], args.output_dir, threshold=0.5,
        references=[reference_from_label(eval_set[i]["labels"]) for i in shown],
        query_box_images=[eval_rows[i]["image"] for i in range(min(100, len(eval_rows)))])

    difference = check_reload(model, train_args.output_dir, eval_set)
    total_seconds = time.perf_counter() - start
    summary = {
        "map": scores["map"], "map_50": scores["map_50"], "map_75": scores["map_75"],
        "num_eval_images": scores["num_images"], "train_seconds": round(result["train_seconds"], 1),
        "total_seconds": round(total_seconds, 1), "steps": len(result["losses"]), "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "reload_max_abs_difference": difference, "pictures": pictures, "targets": TARGETS,
        "targets_reached": all(scores[k] >= v for k, v in TARGETS.items()),
    }
    with open(os.path.join(args.output_dir, "demo_results.json"), "w") as handle:
        json.dump({**summary, "coco": scores}, handle, indent=1)
    print(f"\nCOCO box metrics on {scores['num_images']} held-out synthetic images:\n{format_coco_table(scores)}")
    print(f"\nreloaded {train_args.output_dir} with AutoModelForObjectDetection.from_pretrained: same outputs "
          f"(max |difference| {difference:.1e})")
    print(f"wrote {', '.join(pictures)}, {args.output_dir}/loss_curve.png and {args.output_dir}/model/")
    verdict = "reached" if summary["targets_reached"] else "NOT reached"
    print(f"mAP@0.5 {scores['map_50']:.3f} (target >= {TARGETS['map_50']}), mAP@[.5:.95] {scores['map']:.3f} "
          f"(target >= {TARGETS['map']}): targets {verdict}; {len(result['losses'])} steps, training "
          f"{result['train_seconds'] / 60:.1f} min, "
          f"DETR part {total_seconds / 60:.1f} min")
    if args.vilt:
        summary["vilt"] = run_vilt_part(args)
        summary["total_seconds_with_vilt"] = round(time.perf_counter() - start, 1)
        with open(os.path.join(args.output_dir, "demo_results.json"), "w") as handle:
            json.dump({**summary, "coco": scores}, handle, indent=1, default=str)
        print(f"whole demo (DETR and ViLT) {summary['total_seconds_with_vilt'] / 60:.1f} min")
    return summary
