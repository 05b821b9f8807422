"""The README's ViLT demo: pretrain a small ViLT on the synthetic captions on the CPU, fine-tune it on synthetic VQA,
compare its VQA score with the majority-answer baseline (and, optionally, with fine-tuning from scratch for the same
total time), then answer a few questions about a picture it draws.

    python -m detrvilt.training.vilt_demo --output_dir outputs/vilt_demo
    python -m detrvilt.training.vilt_demo --output_dir outputs/vilt_demo --compare_from_scratch

Why this recipe and not the paper's: ViLT-B/32 (87M parameters, 384-pixel images, 40 tokens) pretrains for 100k
steps of 4,096 pairs on 64 GPUs. On two CPU cores for a few minutes the model is narrow (128 wide, 4 blocks),
the synthetic images are 64 pixels in 16-pixel patches (a 4 x 4 grid), texts are at most 16 tokens, pretraining is
MLM + ITM in one pass (WPA's optimal transport costs more than the rest of a step at this size; switch it on with
--pretraining_objectives mlm,itm,wpa). The optimizer and schedule are the official ones (AdamW 0.9/0.98, weight decay
0.01, 10% warmup then linear decay to 0, a larger rate for the VQA head) with larger learning rates, which a small
model trained from scratch tolerates.

The budget is a number of steps, so the numbers are the same on every machine (deterministic CPU kernels); the
time it takes is printed. "The same total budget" for the from-scratch comparison is the same CPU time: the
from-scratch run gets the fine-tuning steps plus as many VQA steps as the pretraining's CPU time pays for (CPU time
of this process, so a busy machine does not bias the comparison).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from transformers import HfArgumentParser

from ..data.vilt_synthetic import random_scene, render_scene, scene_question
from .vilt_arguments import ViltAccelerateArguments, ViltDataArguments, ViltModelArguments
from .vilt_evaluation import majority_vqa_score
from .vilt_recipes import run_vilt_accelerate_training


@dataclass
class ViltDemoArguments:
    """Settings of the ViLT demo (defaults: the recipe the README's numbers come from)."""

    output_dir: str = field(default="outputs/vilt_demo", metadata={
        "help": "Where the models (pretrain/, vqa/, vqa_from_scratch/), the question picture and "
                "vilt_demo_results.json go."})
    pretrain_steps: int = field(default=800, metadata={"help": "Pretraining steps (MLM + ITM) on synthetic captions."})
    finetune_steps: int = field(default=1200, metadata={"help": "VQA fine-tuning steps."})
    max_minutes_per_stage: float | None = field(default=None, metadata={
        "help": "Safety cap: stop a stage after the step during which this many minutes have passed (the schedule "
                "is still planned for the full step count)."})
    compare_from_scratch: bool = field(default=False, metadata={
        "help": "Also fine-tune a fresh model on VQA for the same total budget (the CPU time of pretraining + "
                "fine-tuning, in VQA steps) and report both scores."})
    skip_pretraining: bool = field(default=False, metadata={
        "help": "Fine-tune from scratch only, for --finetune_steps (no pretraining stage)."})
    pretraining_objectives: str = field(default="mlm,itm", metadata={
        "help": "Pretraining objectives, comma-separated among mlm, itm, wpa."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the transformer."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Number of transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads per block."})
    image_size: int = field(default=64, metadata={"help": "Side of the synthetic images, pixels."})
    patch_size: int = field(default=16, metadata={"help": "Side of the patches, pixels."})
    max_text_length: int = field(default=16, metadata={"help": "Text length in tokens ([CLS] and [SEP] included)."})
    batch_size: int = field(default=32, metadata={"help": "Training examples per step."})
    pretrain_learning_rate: float = field(default=5e-4, metadata={"help": "Pretraining AdamW learning rate."})
    finetune_learning_rate: float = field(default=5e-4, metadata={
        "help": "VQA AdamW learning rate (the head gets x10 of it, capped by --head_lr_multiplier)."})
    head_lr_multiplier: float = field(default=3.0, metadata={
        "help": "Learning-rate factor of the VQA head (official 10, for a 1e-4 base rate)."})
    caption_images: int = field(default=3000, metadata={"help": "Synthetic pretraining images (2 captions each)."})
    vqa_train_questions: int = field(default=6000, metadata={"help": "Synthetic VQA training questions (seed 0)."})
    vqa_eval_questions: int = field(default=500, metadata={"help": "Held-out synthetic VQA questions (seed 1)."})
    num_threads: int = field(default=2, metadata={"help": "CPU threads for torch."})
    seed: int = field(default=0, metadata={"help": "Seed of the models, the data order and the masking."})
    progress_bar: bool = field(default=False, metadata={"help": "Show progress bars."})


def _model_args(args: ViltDemoArguments, model_name_or_path: str | None = None) -> ViltModelArguments:
    return ViltModelArguments(
        model_name_or_path=model_name_or_path, hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads, intermediate_size=4 * args.hidden_size,
        patch_size=args.patch_size, image_size=args.image_size, max_image_length=-1, hidden_dropout_prob=0.0,
        pretraining_objectives=args.pretraining_objectives)


def _data_args(args: ViltDemoArguments, task: str) -> ViltDataArguments:
    train_size = args.caption_images if task == "pretrain" else args.vqa_train_questions
    eval_size = 200 if task == "pretrain" else args.vqa_eval_questions
    return ViltDataArguments(task=task, dataset="synthetic", synthetic_train_size=train_size,
                             synthetic_eval_size=eval_size, synthetic_image_size=args.image_size,
                             shortest_edge=args.image_size, max_text_length=args.max_text_length)


def _train_args(args: ViltDemoArguments, output_dir: str, steps: int, learning_rate: float,
                head_lr_multiplier: float | None) -> ViltAccelerateArguments:
    return ViltAccelerateArguments(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=100, learning_rate=learning_rate, head_lr_multiplier=head_lr_multiplier,
        warmup=0.1, max_grad_norm=1.0, seed=args.seed, logging_steps=100, max_train_minutes=args.max_minutes_per_stage,
        progress_bar=args.progress_bar)


def finetune_vqa(args: ViltDemoArguments, output_dir: str, steps: int, init: str | None) -> dict:
    """Fine-tune on synthetic VQA for `steps` from the pretraining folder `init` (or from scratch)."""
    return run_vilt_accelerate_training(
        _model_args(args, init), _data_args(args, "vqa"),
        _train_args(args, output_dir, steps, args.finetune_learning_rate, args.head_lr_multiplier),
        accelerator=Accelerator(cpu=True))


def _stage(result: dict) -> dict:
    return {"steps": len(result["losses"]), "seconds": round(result["train_seconds"], 1),
            "cpu_seconds": round(result["train_cpu_seconds"], 1)}


@torch.no_grad()
def answer_questions(model, processor, image, questions, top_k: int = 3) -> list[list[tuple[str, float]]]:
    """The `top_k` answers (answer, sigmoid score) of `model` to each question about `image` (a PIL image)."""
    model.eval()
    inputs = processor(images=[image] * len(questions), text=list(questions))
    logits = model(**{k: v for k, v in inputs.items()}).logits.float()  # (Q, num_answers)
    scores, indices = logits.sigmoid().topk(top_k, dim=-1)
    id2label = model.config.id2label
    return [[(id2label[int(i)], float(s)) for s, i in zip(row_scores, row_indices)]
            for row_scores, row_indices in zip(scores, indices)]


def draw_questions_figure(image, questions, answers, truths, path: str) -> None:
    """Save the picture and, beside it, each question with the model's top answers (the true answer marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 1.6]})
    left.imshow(np.asarray(image), interpolation="nearest")
    left.set_axis_off()
    left.set_title("a scene the model has never seen")
    right.set_axis_off()
    lines = []
    for question, top, truth in zip(questions, answers, truths):
        lines.append(f"Q: {question}   (true: {truth})")
        lines.append("   " + "   ".join(f"{answer} {score:.2f}" + (" *" if answer == truth else "")
                                        for answer, score in top))
    right.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=10,
               transform=right.transAxes)
    right.set_title("top answers of the fine-tuned ViLT (sigmoid scores)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def picture_questions(image_size: int, seed: int = 7, num_questions: int = 5):
    """A new scene (seed not in the training streams), its image and distinct questions with their answers."""
    rng = np.random.default_rng([seed, 12345])
    objects = random_scene(rng, image_size)
    while len(objects) < 3:
        objects = random_scene(rng, image_size)
    questions, truths = [], []
    for _ in range(100):
        question, answer, _ = scene_question(objects, rng)
        if question not in questions:
            questions.append(question)
            truths.append(answer)
        if len(questions) == num_questions:
            break
    return render_scene(objects, image_size), questions, truths


def run_vilt_demo(args: ViltDemoArguments) -> dict:
    """Run the ViLT demo; returns the numbers (also written to `output_dir/vilt_demo_results.json`) plus the fine-tuned
    VQA `model` and its `processor`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(args.num_threads)
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.perf_counter()
    summary: dict = {"settings": asdict(args)}
    init = None
    pretrain = None
    if not args.skip_pretraining:
        print(f"ViLT demo: pretraining a {args.num_hidden_layers}-block, {args.hidden_size}-wide ViLT on synthetic "
              f"captions ({args.pretraining_objectives}) for {args.pretrain_steps} steps on the CPU")
        init = os.path.join(args.output_dir, "pretrain")
        pretrain = run_vilt_accelerate_training(
            _model_args(args), _data_args(args, "pretrain"),
            _train_args(args, init, args.pretrain_steps, args.pretrain_learning_rate, None),
            accelerator=Accelerator(cpu=True))
        summary["pretrain"] = {**_stage(pretrain), **{k: v for k, v in pretrain["eval"].items() if "accuracy" in k}}
    print(f"ViLT demo: fine-tuning on synthetic VQA for {args.finetune_steps} steps "
          f"({'from the pretrained model' if init else 'from scratch'})")
    vqa = finetune_vqa(args, os.path.join(args.output_dir, "vqa"), args.finetune_steps, init)
    baseline = majority_vqa_score(vqa["train_dataset"]["answers"], vqa["eval_dataset"]["answers"])
    summary["vqa"] = {**_stage(vqa), "vqa_score": vqa["eval"]["vqa_score"], "pretrained": init is not None}
    summary["majority_baseline"] = baseline
    summary["margin_points"] = 100 * (vqa["eval"]["vqa_score"] - baseline["vqa_score"])
    print(f"\nVQA score on {vqa['eval']['num_examples']} held-out synthetic questions: "
          f"{100 * vqa['eval']['vqa_score']:.1f}  (majority answer {baseline['answer']!r}: "
          f"{100 * baseline['vqa_score']:.1f}; margin {summary['margin_points']:+.1f} points)")
    if args.compare_from_scratch and pretrain is not None:
        vqa_step_cpu = vqa["train_cpu_seconds"] / max(1, len(vqa["losses"]))
        steps = len(vqa["losses"]) + int(round(pretrain["train_cpu_seconds"] / vqa_step_cpu))
        print(f"ViLT demo: fine-tuning from scratch on VQA for the same total budget: {steps} steps (the CPU time of "
              f"{len(pretrain['losses'])} pretraining + {len(vqa['losses'])} fine-tuning steps)")
        scratch = finetune_vqa(args, os.path.join(args.output_dir, "vqa_from_scratch"), steps, None)
        summary["vqa_from_scratch"] = {**_stage(scratch), "vqa_score": scratch["eval"]["vqa_score"]}
        print(f"same budget, from scratch: VQA score {100 * scratch['eval']['vqa_score']:.1f} vs pretrained first "
              f"{100 * vqa['eval']['vqa_score']:.1f}")

    image, questions, truths = picture_questions(args.image_size, seed=args.seed + 7)
    answers = answer_questions(vqa["model"], vqa["processor"], image, questions)
    picture = os.path.join(args.output_dir, "vilt_questions.png")
    draw_questions_figure(image, questions, answers, truths, picture)
    for question, top, truth in zip(questions, answers, truths):
        print(f"  Q: {question}  ->  " + ", ".join(f"{a} ({s:.2f})" for a, s in top) + f"   [true: {truth}]")
    summary["questions"] = [{"question": q, "top_answers": a, "true_answer": t}
                            for q, a, t in zip(questions, answers, truths)]
    summary["picture"] = picture
    summary["total_seconds"] = round(time.perf_counter() - start, 1)
    with open(os.path.join(args.output_dir, "vilt_demo_results.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    print(f"picture with the answers: {picture}; ViLT demo took {summary['total_seconds']:.0f} s")
    return {**summary, "model": vqa["model"], "processor": vqa["processor"], "image": image}


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(ViltDemoArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return run_vilt_demo(args)


if __name__ == "__main__":
    main()
