"""The README's ViLT demo: pretrain a small ViLT on the synthetic captions on the CPU (MLM + ITM + WPA), fine-tune it
on 1,000 labelled synthetic VQA questions, and fine-tune the same architecture from scratch on the same questions for
the same steps; compare both VQA scores with each other and with the majority answer, draw the word-patch alignment
of the pretrained model, then answer a few questions about a picture it draws.

    python -m detrvilt.training.vilt.demo --output_dir outputs/vilt_demo

The recipe is seed 0 of the pretraining study's (`benchmarks/vilt_pretraining.py`, docs/vilt_pretraining.md) at its
largest label budget, on 2 threads: ViLT-B/32 (87M parameters, 384-pixel images, 40 tokens) pretrains for 100k steps
of 4,096 pairs on 64 GPUs; here the model is narrow (128 wide, 4 blocks), the synthetic images are 64 pixels in
16-pixel patches (a 4 x 4 grid) with every object in a patch of its own, texts are at most 24 tokens, and MLM, ITM
and WPA run in one pass for 2,000 steps of 32 captions. The optimizer and schedule are the official ones (AdamW
0.9/0.98, weight decay 0.01, 10% warmup then linear decay to 0, 10x the learning rate for the VQA head) with a
larger pretraining rate (1e-3), which a small model trained from scratch tolerates (the previous recipe, 5e-4 for
800 steps, left ITM near chance), and 40% of the words masked (about two words of a short caption; the paper: 15%).

The budget is a number of steps, so the numbers are the same on every machine (deterministic CPU kernels); the
time it takes is printed.
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

from ...data.vilt.synthetic import (
    SCENE_COLOURS,
    SCENE_SHAPES,
    make_vilt_pointing_examples,
    random_scene,
    render_scene,
    scene_question,
)
from .arguments import ViltAccelerateArguments, ViltDataArguments, ViltModelArguments
from .metrics import majority_vqa_score, wpa_pointing_scores
from .recipes import run_vilt_accelerate_training


@dataclass
class ViltDemoArguments:
    """Settings of the ViLT demo (defaults: the recipe the README's numbers come from)."""

    output_dir: str = field(default="outputs/vilt_demo", metadata={
        "help": "Where the models (pretrain/, vqa/, vqa_from_scratch/), the pictures and vilt_demo_results.json go."})
    pretrain_steps: int = field(default=2000, metadata={
        "help": "Pretraining steps (the --pretraining_objectives in one pass) on synthetic captions."})
    finetune_steps: int = field(default=1000, metadata={"help": "VQA fine-tuning steps (each run)."})
    max_minutes_per_stage: float | None = field(default=None, metadata={
        "help": "Safety cap: stop a stage after the step during which this many minutes have passed (the schedule "
                "is still planned for the full step count)."})
    compare_from_scratch: bool = field(default=True, metadata={
        "help": "Also fine-tune a fresh model on the same labelled questions for the same fine-tuning steps, and "
                "report both scores (on by default; --no_compare_from_scratch skips it)."})
    skip_pretraining: bool = field(default=False, metadata={
        "help": "Fine-tune from scratch only, for --finetune_steps (no pretraining stage)."})
    pretraining_objectives: str = field(default="mlm,itm,wpa", metadata={
        "help": "Pretraining objectives, comma-separated among mlm, itm, wpa."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the transformer."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Number of transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads per block."})
    image_size: int = field(default=64, metadata={"help": "Side of the synthetic images, pixels."})
    patch_size: int = field(default=16, metadata={"help": "Side of the patches, pixels."})
    objects_on_patch_grid: bool = field(default=True, metadata={
        "help": "Draw the synthetic objects in whole patches (small: one, large: 2 x 2), so that every shape lies "
                "whole in the patches it covers; off: anywhere."})
    max_text_length: int = field(default=24, metadata={"help": "Text length in tokens ([CLS] and [SEP] included)."})
    batch_size: int = field(default=32, metadata={"help": "Training examples per step."})
    pretrain_learning_rate: float = field(default=1e-3, metadata={"help": "Pretraining AdamW learning rate."})
    finetune_learning_rate: float = field(default=2e-4, metadata={
        "help": "VQA AdamW learning rate of the transformer (the head gets --head_lr_multiplier times it)."})
    head_lr_multiplier: float = field(default=10.0, metadata={
        "help": "Learning-rate factor of the VQA head (official 10, for a 1e-4 base rate)."})
    mlm_probability: float = field(default=0.4, metadata={"help": "MLM masking rate (whole words)."})
    wpa_loss_weight: float = field(default=0.1, metadata={"help": "Weight of the WPA loss (the official 0.1)."})
    caption_images: int = field(default=4000, metadata={"help": "Synthetic pretraining images (2 captions each)."})
    vqa_train_questions: int = field(default=1000, metadata={
        "help": "Labelled synthetic VQA training questions (the first N of seed 0); a few hundred: the low-label "
                "regime."})
    vqa_eval_questions: int = field(default=1000, metadata={"help": "Held-out synthetic VQA questions (seed 1)."})
    pointing_images: int = field(default=300, metadata={
        "help": "Held-out captioned scenes for the word-patch pointing accuracy of the pretrained model."})
    num_threads: int = field(default=2, metadata={"help": "CPU threads for torch."})
    seed: int = field(default=0, metadata={"help": "Seed of the models, the data order and the masking."})
    progress_bar: bool = field(default=False, metadata={"help": "Show progress bars."})


def small_model_args(settings, init: str | None = None, objectives: str | None = None) -> ViltModelArguments:
    """The model of the demo and of the pretraining study (`settings`: a [`ViltDemoArguments`] or a
    `PretrainingStudyArguments`): new from the settings, or from the folder `init`; no dropout, every patch kept,
    MLP 4x wide."""
    return ViltModelArguments(
        model_name_or_path=init, hidden_size=settings.hidden_size, num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads, intermediate_size=4 * settings.hidden_size,
        patch_size=settings.patch_size, image_size=settings.image_size, max_image_length=-1, hidden_dropout_prob=0.0,
        pretraining_objectives=objectives or settings.pretraining_objectives,
        wpa_loss_weight=settings.wpa_loss_weight)


def scene_grid(settings) -> int | None:
    """The cell size the settings' synthetic objects are drawn on (the patch size), or None (anywhere)."""
    return settings.patch_size if settings.objects_on_patch_grid else None


def synthetic_data_args(settings, task: str, train_size: int, eval_size: int, **overrides) -> ViltDataArguments:
    """The synthetic data of `task` at the settings' image size, object grid and text length (`overrides`: other
    [`ViltDataArguments`] fields, e.g. `augment`, `whole_word_masking`)."""
    return ViltDataArguments(task=task, dataset="synthetic", synthetic_train_size=train_size,
                             synthetic_eval_size=eval_size, synthetic_image_size=settings.image_size,
                             synthetic_grid=scene_grid(settings) or 0, shortest_edge=settings.image_size,
                             max_text_length=settings.max_text_length, mlm_probability=settings.mlm_probability,
                             **overrides)


def small_train_args(settings, output_dir: str, steps: int, learning_rate: float, seed: int,
                     head_lr_multiplier: float | None, max_minutes: float | None = None) -> ViltAccelerateArguments:
    """The official optimizer and schedule (AdamW, 10% warmup, linear decay) at the settings' batch size, gradients
    clipped at 1."""
    return ViltAccelerateArguments(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=100, learning_rate=learning_rate, head_lr_multiplier=head_lr_multiplier,
        warmup=0.1, max_grad_norm=1.0, seed=seed, logging_steps=max(1, steps // 5), max_train_minutes=max_minutes,
        progress_bar=getattr(settings, "progress_bar", False))


def _data_args(args: ViltDemoArguments, task: str) -> ViltDataArguments:
    train_size = args.caption_images if task == "pretrain" else args.vqa_train_questions
    eval_size = 300 if task == "pretrain" else args.vqa_eval_questions
    return synthetic_data_args(args, task, train_size, eval_size)


def _train_args(args: ViltDemoArguments, output_dir: str, steps: int, learning_rate: float,
                head_lr_multiplier: float | None) -> ViltAccelerateArguments:
    return small_train_args(args, output_dir, steps, learning_rate, args.seed, head_lr_multiplier,
                            args.max_minutes_per_stage)


def finetune_vqa(args: ViltDemoArguments, output_dir: str, steps: int, init: str | None) -> dict:
    """Fine-tune on synthetic VQA for `steps` from the pretraining folder `init` (or from scratch)."""
    return run_vilt_accelerate_training(
        small_model_args(args, init), _data_args(args, "vqa"),
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
    return [[(id2label[int(i)], float(s)) for s, i in zip(row_scores, row_indices, strict=True)]
            for row_scores, row_indices in zip(scores, indices, strict=True)]


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
    for question, top, truth in zip(questions, answers, truths, strict=True):
        lines.append(f"Q: {question}   (true: {truth})")
        lines.append("   " + "   ".join(f"{answer} {score:.2f}" + (" *" if answer == truth else "")
                                        for answer, score in top))
    right.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=10,
               transform=right.transAxes)
    right.set_title("top answers of the fine-tuned ViLT (sigmoid scores)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def picture_questions(image_size: int, seed: int = 7, num_questions: int = 5, grid: int | None = None):
    """A new scene (seed not in the training streams), its image and distinct questions with their answers."""
    rng = np.random.default_rng([seed, 12345])
    objects = random_scene(rng, image_size, grid=grid)
    while len(objects) < 3:
        objects = random_scene(rng, image_size, grid=grid)
    questions, truths = [], []
    for _ in range(100):
        question, answer, _ = scene_question(objects, rng)
        if question not in questions:
            questions.append(question)
            truths.append(answer)
        if len(questions) == num_questions:
            break
    return render_scene(objects, image_size), questions, truths


def alignment_example(image_size: int, seed: int = 7, grid: int | None = None) -> dict:
    """A held-out scene with a caption whose colour and shape words each name one object (for the alignment
    picture): the first such example of a scene stream not used elsewhere with at least two objects named."""
    for example in make_vilt_pointing_examples(50, seed=seed + 1000, image_size=image_size, grid=grid):
        if len({box for _, _, box in example["groundings"]}) >= 2:
            return example
    raise ValueError(f"no scene with two named objects among 50 of seed {seed + 1000}")


def draw_pretrained_alignment(model, processor, image_size: int, path: str, seed: int = 7,
                              grid: int | None = None) -> dict:
    """The word-patch alignment picture of the pretrained `model` (its own IPOT plan) on a new scene; returns the
    caption, the picture's path and the share of its named words whose top patch lies in the object's box."""
    from ...viz.vilt.alignment import draw_word_patch_alignment

    example = alignment_example(image_size, seed, grid)
    draw_word_patch_alignment(model.eval(), processor, example["image"], example["text"], path)
    hits = wpa_pointing_scores(model, processor, [example])
    return {"caption": example["text"], "picture": path, "pointing_accuracy": hits["pointing_accuracy"]}


def run_vilt_demo(args: ViltDemoArguments) -> dict:
    """Run the ViLT demo; returns the numbers (also written to `output_dir/vilt_demo_results.json`) plus the fine-tuned
    VQA `model`, its `processor` and the `pretrained_model` (None with `skip_pretraining`)."""
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
            small_model_args(args), _data_args(args, "pretrain"),
            _train_args(args, init, args.pretrain_steps, args.pretrain_learning_rate, None),
            accelerator=Accelerator(cpu=True))
        scores = {k: v for k, v in pretrain["eval"].items() if "accuracy" in k}
        examples = make_vilt_pointing_examples(args.pointing_images, seed=1, image_size=args.image_size,
                                               grid=scene_grid(args))
        pointing = wpa_pointing_scores(pretrain["model"], pretrain["processor"], examples,
                                       word_kinds={"colour": tuple(SCENE_COLOURS), "shape": SCENE_SHAPES})
        summary["pretrain"] = {**_stage(pretrain), **scores, "pointing_accuracy": pointing["pointing_accuracy"],
                               "pointing_chance": pointing["chance"], "pointing_words": pointing["num_words"]}
        print(f"pretraining: held-out MLM accuracy {100 * scores.get('mlm_accuracy', float('nan')):.1f}%, ITM "
              f"accuracy {100 * scores.get('itm_accuracy_matched', float('nan')):.1f}% on matched and "
              f"{100 * scores.get('itm_accuracy_replaced', float('nan')):.1f}% on replaced pairs; word-patch "
              f"pointing {100 * pointing['pointing_accuracy']:.1f}% (chance {100 * pointing['chance']:.1f}%)")
        summary["alignment"] = draw_pretrained_alignment(
            pretrain["model"], pretrain["processor"], args.image_size,
            os.path.join(args.output_dir, "vilt_word_patch_alignment.png"), seed=args.seed + 7, grid=scene_grid(args))
    print(f"ViLT demo: fine-tuning on {args.vqa_train_questions} labelled synthetic VQA questions for "
          f"{args.finetune_steps} steps ({'from the pretrained model' if init else 'from scratch'})")
    vqa = finetune_vqa(args, os.path.join(args.output_dir, "vqa"), args.finetune_steps, init)
    baseline = majority_vqa_score(vqa["train_dataset"]["answers"], vqa["eval_dataset"]["answers"])
    summary["vqa"] = {**_stage(vqa), "vqa_score": vqa["eval"]["vqa_score"], "pretrained": init is not None,
                      "labelled_questions": args.vqa_train_questions}
    summary["majority_baseline"] = baseline
    summary["margin_points"] = 100 * (vqa["eval"]["vqa_score"] - baseline["vqa_score"])
    print(f"\nVQA score on {vqa['eval']['num_examples']} held-out synthetic questions: "
          f"{100 * vqa['eval']['vqa_score']:.1f}  (majority answer {baseline['answer']!r}: "
          f"{100 * baseline['vqa_score']:.1f}; margin {summary['margin_points']:+.1f} points)")
    if args.compare_from_scratch and init is not None:
        print(f"ViLT demo: the same fine-tuning from scratch ({args.vqa_train_questions} questions, "
              f"{args.finetune_steps} steps)")
        scratch = finetune_vqa(args, os.path.join(args.output_dir, "vqa_from_scratch"), args.finetune_steps, None)
        summary["vqa_from_scratch"] = {**_stage(scratch), "vqa_score": scratch["eval"]["vqa_score"]}
        summary["pretraining_gain_points"] = 100 * (vqa["eval"]["vqa_score"] - scratch["eval"]["vqa_score"])
        print(f"same labelled questions and fine-tuning steps: pretrained first {100 * vqa['eval']['vqa_score']:.1f} "
              f"vs from scratch {100 * scratch['eval']['vqa_score']:.1f} "
              f"({summary['pretraining_gain_points']:+.1f} points)")

    image, questions, truths = picture_questions(args.image_size, seed=args.seed + 7, grid=scene_grid(args))
    answers = answer_questions(vqa["model"], vqa["processor"], image, questions)
    picture = os.path.join(args.output_dir, "vilt_questions.png")
    draw_questions_figure(image, questions, answers, truths, picture)
    for question, top, truth in zip(questions, answers, truths, strict=True):
        print(f"  Q: {question}  ->  " + ", ".join(f"{a} ({s:.2f})" for a, s in top) + f"   [true: {truth}]")
    summary["questions"] = [{"question": q, "top_answers": a, "true_answer": t}
                            for q, a, t in zip(questions, answers, truths, strict=True)]
    summary["picture"] = picture
    summary["total_seconds"] = round(time.perf_counter() - start, 1)
    with open(os.path.join(args.output_dir, "vilt_demo_results.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    alignment = summary.get("alignment", {}).get("picture")
    print(f"pictures: {picture}" + (f", {alignment} (word-patch alignment of the pretrained model)" if alignment
                                    else "") + f"; ViLT demo took {summary['total_seconds']:.0f} s")
    return {**summary, "model": vqa["model"], "processor": vqa["processor"], "image": image,
            "pretrained_model": pretrain["model"] if pretrain is not None else None,
            "alignment_picture": alignment}


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(ViltDemoArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return run_vilt_demo(args)


if __name__ == "__main__":
    main()
