"""Does ViLT pretraining work? The measured answer on the built-in synthetic scenes, on the CPU.

The ViLT paper (Kim et al., 2021) pretrains with image-text matching (ITM), whole-word masked language modeling (MLM)
and word-patch alignment (WPA), then fine-tunes; its claims, scaled down to what a CPU does in about an hour:

1. **Transfer where labels are scarce.** Pretrain on many captioned scenes, fine-tune VQA on a few hundred labelled
   questions, against the same architecture fine-tuned from scratch with the same fine-tuning steps; at two label
   budgets, and NLVR2 (statements about two scenes) at one.
2. **ITM learns**: accuracy on matched and on replaced held-out pairs.
3. **WPA points at objects**: the `wpa_pointing` metric of the model's own IPOT plans on held-out captions, for the
   colour and shape words that name one object, with its chance level.
4. **The paper's ablations** (its table of ablations, plus WPA): token masking instead of whole-word masking, no
   WPA, RandAugment at fine-tuning; each fine-tuned on the same VQA budget.

Every run repeats for each seed (model initialisation, data order, masking, ITM negatives); the labelled questions
are the same first N of the synthetic training stream for every seed, the evaluation sets (seed 1 of the synthetic
generators) are never trained on. Results go to `output_dir/results.json` after every run, and a finished run is not
repeated when the study starts again (so an interrupted study resumes); `output_dir/tables.md` holds the tables.
Processes given different `--seeds` may share one `output_dir` (each run's result is merged into `results.json`
under a file lock), which is how the study uses more than one CPU core.

    python benchmarks/vilt_pretraining.py --output_dir outputs/vilt_pretraining
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import torch
from accelerate import Accelerator
from filelock import FileLock

from ...data.vilt.synthetic import (
    NUMBER_WORDS,
    SCENE_COLOURS,
    SCENE_SHAPES,
    make_vilt_captions_dataset,
    make_vilt_pointing_examples,
    make_vilt_vqa_dataset,
)
from ...modeling.vilt.heads_vilt import ViltForPreTraining
from .demo import scene_grid, small_model_args, small_train_args, synthetic_data_args
from .metrics import majority_vqa_score, masked_word_accuracy, wpa_pointing_scores
from .recipes import build_vilt_processor, run_vilt_accelerate_training

# Pretraining variants: (objectives, whole-word masking). "full" is the paper's recipe.
PRETRAINING_VARIANTS = {"full": ("mlm,itm,wpa", True), "token_masking": ("mlm,itm,wpa", False),
                        "no_wpa": ("mlm,itm", True)}
# Ablation rows: (pretraining variant, RandAugment at fine-tuning).
ABLATIONS = {"token_masking": ("token_masking", False), "no_wpa": ("no_wpa", False), "randaugment": ("full", True)}
RESULTS_FILE = "results.json"
# The caption words whose masked-word accuracy shows what pretraining read from the images ("a" is the count one).
CAPTION_WORD_KINDS = {"colour": tuple(SCENE_COLOURS), "shape": SCENE_SHAPES + tuple(f"{s}s" for s in SCENE_SHAPES),
                      "count": ("a",) + NUMBER_WORDS[2:], "relation": ("left", "right")}


def _int_list(value: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated integers, got {value!r}") from None
    if not values:
        raise ValueError(f"--{name} must name at least one value, got {value!r}")
    return values


@dataclass
class PretrainingStudyArguments:
    """Settings of the pretraining study (defaults: the run behind the tables of `docs/vilt_pretraining.md`)."""

    output_dir: str = field(default="outputs/vilt_pretraining", metadata={
        "help": "Where results.json, tables.md and the pretrained models (models/) go."})
    seeds: str = field(default="0,1,2", metadata={"help": "Comma-separated seeds; every run repeats for each."})
    label_budgets: str = field(default="100,300,1000", metadata={
        "help": "Comma-separated numbers of labelled VQA training questions (the first N of the synthetic stream)."})
    ablations: str = field(default="token_masking,no_wpa,randaugment", metadata={
        "help": f"Comma-separated ablation rows among {tuple(ABLATIONS)} ('' for none), fine-tuned on "
                "--ablation_budget labelled questions."})
    ablation_budget: int | None = field(default=None, metadata={
        "help": "The label budget (one of --label_budgets) the ablation rows are fine-tuned on; default: the "
                "largest, where pretraining made the largest difference (docs/vilt_pretraining.md)."})
    downstream: str = field(default="nlvr2", metadata={
        "help": "The second downstream task, pretrained vs scratch: 'nlvr2' or '' for none."})
    pretrain_steps: int = field(default=2000, metadata={"help": "Pretraining steps (MLM + ITM + WPA in one pass)."})
    caption_images: int = field(default=4000, metadata={"help": "Captioned pretraining scenes (2 captions each)."})
    finetune_steps: int = field(default=1000, metadata={"help": "VQA fine-tuning steps, for every budget and init."})
    nlvr2_train_pairs: int = field(default=1000, metadata={"help": "Labelled NLVR2 training pairs."})
    nlvr2_steps: int = field(default=500, metadata={"help": "NLVR2 fine-tuning steps."})
    vqa_eval_questions: int = field(default=1000, metadata={"help": "Held-out VQA questions (seed 1)."})
    nlvr2_eval_pairs: int = field(default=500, metadata={"help": "Held-out NLVR2 pairs (seed 1)."})
    pretrain_eval_images: int = field(default=300, metadata={
        "help": "Held-out captioned scenes for the MLM and ITM accuracies (2 pairs each, half of them replaced)."})
    pointing_images: int = field(default=300, metadata={"help": "Held-out scenes for the pointing metric."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the transformer."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads per block."})
    image_size: int = field(default=64, metadata={"help": "Side of the synthetic images, pixels."})
    patch_size: int = field(default=16, metadata={"help": "Side of the patches, pixels."})
    objects_on_patch_grid: bool = field(default=True, metadata={
        "help": "Draw the synthetic objects in whole patches (small: one, large: 2 x 2); "
                "--no_objects_on_patch_grid places them anywhere."})
    max_text_length: int = field(default=24, metadata={
        "help": "Text length in tokens ([CLS] and [SEP] included); the longest synthetic caption takes 21."})
    batch_size: int = field(default=32, metadata={"help": "Training examples per step (every task)."})
    pretrain_learning_rate: float = field(default=1e-3, metadata={"help": "Pretraining AdamW learning rate."})
    finetune_learning_rate: float = field(default=2e-4, metadata={
        "help": "Fine-tuning AdamW learning rate of the transformer (pretrained and scratch alike)."})
    head_lr_multiplier: float = field(default=10.0, metadata={
        "help": "Learning-rate factor of the VQA / NLVR2 head (the official 10)."})
    mlm_probability: float = field(default=0.4, metadata={
        "help": "Masking rate of MLM (words, or pieces); 40% puts about two masked words in each short synthetic "
                "caption (the paper's 15% is not compared in the study)."})
    wpa_loss_weight: float = field(default=0.1, metadata={"help": "Weight of the WPA loss (the official 0.1)."})
    num_threads: int = field(default=1, metadata={"help": "CPU threads for torch."})
    keep_finetuned: bool = field(default=False, metadata={
        "help": "Keep the fine-tuned models' folders (by default only the pretrained ones are kept)."})
    tables_only: bool = field(default=False, metadata={"help": "Only rewrite tables.md from results.json."})

    def __post_init__(self):
        self.seed_list = _int_list(self.seeds, "seeds")
        self.budget_list = sorted(_int_list(self.label_budgets, "label_budgets"))
        if min(self.budget_list) < self.batch_size:
            raise ValueError(f"--label_budgets must be at least --batch_size ({self.batch_size}), got "
                             f"{self.budget_list}")
        self.ablation_list = [a.strip() for a in self.ablations.split(",") if a.strip()]
        if self.ablation_budget is None:
            self.ablation_budget = self.budget_list[-1]
        elif self.ablation_budget not in self.budget_list:
            raise ValueError(f"--ablation_budget must be one of --label_budgets {self.budget_list}, got "
                             f"{self.ablation_budget!r}")
        unknown = [a for a in self.ablation_list if a not in ABLATIONS]
        if unknown:
            raise ValueError(f"--ablations must be among {tuple(ABLATIONS)}, got {unknown}")
        if self.downstream not in ("nlvr2", ""):
            raise ValueError(f"--downstream must be 'nlvr2' or '', got {self.downstream!r}")
        for name in ("pretrain_steps", "caption_images", "finetune_steps", "nlvr2_train_pairs", "nlvr2_steps",
                     "vqa_eval_questions", "nlvr2_eval_pairs", "pretrain_eval_images", "pointing_images",
                     "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------------------------------------------
# One run each


def _timed(result: dict, start: float) -> dict:
    return {"steps": len(result["losses"]), "train_seconds": round(result["train_seconds"], 1),
            "train_cpu_seconds": round(result["train_cpu_seconds"], 1),
            "wall_seconds": round(time.perf_counter() - start, 1)}


def pointing_scores(args: PretrainingStudyArguments, model, processor, sources=("plan", "similarity", "attention")
                    ) -> dict:
    """Word-patch pointing on the held-out scenes: the metric (`source="plan"`: keys as `wpa_pointing_scores`
    returns them) and its diagnostics (keys prefixed `similarity_`, `attention_`; see `wpa_pointing_scores`)."""
    examples = make_vilt_pointing_examples(args.pointing_images, seed=1, image_size=args.image_size,
                                           grid=scene_grid(args))
    record = {}
    for source in sources:
        scores = wpa_pointing_scores(model, processor, examples, source=source,
                                     word_kinds={"colour": tuple(SCENE_COLOURS), "shape": SCENE_SHAPES})
        if source == "plan":
            record.update(scores)
        else:
            record.update({f"{source}_{key}": value for key, value in scores.items() if "pointing_accuracy" in key})
    return record


def _complete_pointing(args: PretrainingStudyArguments, path: str) -> None:
    """Add the pointing diagnostics to pretraining records made before they existed (the model folders are kept)."""
    processor = build_vilt_processor(synthetic_data_args(args, "pretrain", 1, 1), args.patch_size)
    for key, run in sorted(load_results(path)["runs"].items()):
        folder = _pretrained_folder(args, run.get("variant", ""), run.get("seed", -1))
        if run.get("kind") != "pretrain" or "attention_pointing_accuracy" in run or not os.path.isdir(folder):
            continue
        print(f"[study] {key}: pointing diagnostics", flush=True)
        model = ViltForPreTraining.from_pretrained(folder)
        extra = pointing_scores(args, model, processor, sources=("similarity", "attention"))
        _merge(path, partial(_add_run, key=key, run={**run, **extra}))


def pretrain(args: PretrainingStudyArguments, variant: str, seed: int, output_dir: str) -> dict:
    """Pretrain variant `variant` of [`PRETRAINING_VARIANTS`] into `output_dir`; held-out MLM and ITM accuracies
    and word-patch pointing (colour words, shape words, all)."""
    objectives, whole_word = PRETRAINING_VARIANTS[variant]
    start = time.perf_counter()
    result = run_vilt_accelerate_training(
        small_model_args(args, objectives=objectives),
        synthetic_data_args(args, "pretrain", args.caption_images, args.pretrain_eval_images,
                            whole_word_masking=whole_word),
        small_train_args(args, output_dir, args.pretrain_steps, args.pretrain_learning_rate, seed, None),
        accelerator=Accelerator(cpu=True))
    model, processor = result["model"], result["processor"]
    pointing = pointing_scores(args, model, processor)
    held_out = make_vilt_captions_dataset(args.pretrain_eval_images, seed=1, image_size=args.image_size,
                                          grid=scene_grid(args))
    pairs = [{"image": row["image"], "text": caption} for row in held_out for caption in row["captions"]]
    words = masked_word_accuracy(model, processor, pairs, CAPTION_WORD_KINDS) if "mlm" in objectives else {}
    scores = {k: v for k, v in result["eval"].items() if k.endswith("accuracy") or "accuracy_" in k}
    return {**_timed(result, start), **scores, **pointing, **words,
            "final_losses": result["log"][-1] if result["log"] else {}}


@torch.no_grad()
def accuracy_by_question_type(model, processor, dataset, batch_size: int = 100) -> dict:
    """Exact-answer accuracy per `question_type` of a synthetic VQA set (its ten answers are identical)."""
    model.eval()
    hits: dict[str, list[bool]] = {}
    id2label = model.config.id2label
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start:start + batch_size]
        inputs = processor(images=rows["image"], text=rows["question"])
        answers = model(**inputs).logits.argmax(-1).tolist()
        for answer, truth, kind in zip(answers, rows["answers"], rows["question_type"], strict=True):
            hits.setdefault(kind, []).append(id2label[answer] == truth[0])
    return {kind: float(np.mean(values)) for kind, values in sorted(hits.items())}


def finetune(args: PretrainingStudyArguments, task: str, seed: int, init: str | None, output_dir: str,
             train_size: int, augment: bool = False) -> dict:
    """Fine-tune `task` (`"vqa"` or `"nlvr2"`) from the pretraining folder `init` (None: from scratch); its
    held-out score (VQA: also per question type)."""
    start = time.perf_counter()
    steps = args.finetune_steps if task == "vqa" else args.nlvr2_steps
    eval_size = args.vqa_eval_questions if task == "vqa" else args.nlvr2_eval_pairs
    result = run_vilt_accelerate_training(
        small_model_args(args, init, objectives="mlm,itm,wpa"),  # (used by pretraining only)
        synthetic_data_args(args, task, train_size, eval_size, augment=augment),
        small_train_args(args, output_dir, steps, args.finetune_learning_rate, seed, args.head_lr_multiplier),
        accelerator=Accelerator(cpu=True))
    record = _timed(result, start)
    if task == "vqa":
        record["vqa_score"] = result["eval"]["vqa_score"]
        record["by_question_type"] = accuracy_by_question_type(result["model"], result["processor"],
                                                               result["eval_dataset"])
    else:
        record["accuracy"] = result["eval"]["accuracy"]
    if not args.keep_finetuned:
        shutil.rmtree(output_dir, ignore_errors=True)
    return record


# ----------------------------------------------------------------------------------------------------------------
# The study


def planned_runs(args: PretrainingStudyArguments) -> list[tuple[str, dict]]:
    """Every run of the study as `(key, spec)`, seed by seed, the main comparison before the ablations."""
    runs = []
    variants = ["full"] + sorted({ABLATIONS[a][0] for a in args.ablation_list} - {"full"})
    for seed in args.seed_list:
        runs.append((f"pretrain/full/seed{seed}", {"kind": "pretrain", "variant": "full", "seed": seed}))
        for budget in args.budget_list:
            for init in ("full", None):
                name = "pretrained" if init else "scratch"
                runs.append((f"vqa/{name}/n{budget}/seed{seed}", {"kind": "vqa", "variant": init, "seed": seed,
                                                                  "budget": budget, "augment": False}))
        if args.downstream == "nlvr2":
            for init in ("full", None):
                name = "pretrained" if init else "scratch"
                runs.append((f"nlvr2/{name}/seed{seed}", {"kind": "nlvr2", "variant": init, "seed": seed,
                                                          "budget": args.nlvr2_train_pairs, "augment": False}))
    for seed in args.seed_list:
        for variant in variants[1:]:
            runs.append((f"pretrain/{variant}/seed{seed}", {"kind": "pretrain", "variant": variant, "seed": seed}))
        for ablation in args.ablation_list:
            variant, augment = ABLATIONS[ablation]
            runs.append((f"vqa/ablation_{ablation}/n{args.ablation_budget}/seed{seed}",
                         {"kind": "vqa", "variant": variant, "seed": seed, "budget": args.ablation_budget,
                          "augment": augment}))
    return runs


def majority_baselines(args: PretrainingStudyArguments) -> dict:
    """The VQA score of always giving the most common training answer, per label budget (`{budget: score}`)."""
    grid = scene_grid(args)
    held_out = make_vilt_vqa_dataset(args.vqa_eval_questions, seed=1, image_size=args.image_size, grid=grid)
    scores = {}
    for budget in args.budget_list:
        train = make_vilt_vqa_dataset(budget, seed=0, image_size=args.image_size, grid=grid)
        scores[str(budget)] = majority_vqa_score(train["answers"], held_out["answers"])["vqa_score"]
    return scores


def _pretrained_folder(args: PretrainingStudyArguments, variant: str, seed: int) -> str:
    return os.path.join(args.output_dir, "models", f"pretrain-{variant}-seed{seed}")


def load_results(path: str) -> dict:
    if not os.path.isfile(path):
        return {"runs": {}}
    with open(path) as handle:
        return json.load(handle)


def _save(results: dict, path: str) -> None:
    partial = path + ".partial"
    with open(partial, "w") as handle:
        json.dump(results, handle, indent=1)
    os.replace(partial, path)  # never a half-written results file


def _merge(path: str, update) -> dict:
    """Apply `update` to the results in `path` and write them back, under a lock: several study processes (each its
    own seeds) may share one output folder. Returns the merged results."""
    with FileLock(path + ".lock"):
        results = load_results(path)
        update(results)
        _save(results, path)
    return results


def _add_run(results: dict, key: str, run: dict) -> None:
    results["runs"][key] = run


def run_study(args: PretrainingStudyArguments) -> dict:
    """Run every missing run of [`planned_runs`] (results written after each), then write the tables. Returns the
    results."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(args.num_threads)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, RESULTS_FILE)
    settings = {k: v for k, v in asdict(args).items() if k not in ("tables_only", "keep_finetuned", "seeds")}
    baselines = majority_baselines(args)

    def header(results: dict) -> None:
        results["settings"] = settings
        results.setdefault("torch_threads", torch.get_num_threads())
        results["majority_baseline"] = {**results.get("majority_baseline", {}), **baselines}

    results = _merge(path, header)
    if not args.tables_only:
        for key, spec in planned_runs(args):
            if key in load_results(path)["runs"]:
                continue
            print(f"[study] {key}", flush=True)
            seed = spec["seed"]
            if spec["kind"] == "pretrain":
                record = pretrain(args, spec["variant"], seed, _pretrained_folder(args, spec["variant"], seed))
            else:
                init = _pretrained_folder(args, spec["variant"], seed) if spec["variant"] else None
                if init is not None and not os.path.isdir(init):
                    raise ValueError(f"run {key} needs the pretrained model {init}, which is missing: delete its "
                                     f"pretraining entry from {path} to train it again")
                folder = os.path.join(args.output_dir, "models", key.replace("/", "-"))
                record = finetune(args, spec["kind"], seed, init, folder, spec["budget"], spec["augment"])
            results = _merge(path, partial(_add_run, key=key, run={**spec, **record}))
            print(f"[study] {key}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                 if isinstance(v, float)), flush=True)
        _complete_pointing(args, path)
        results = load_results(path)
    tables = study_tables(results, args)
    with open(os.path.join(args.output_dir, "tables.md"), "w") as handle:
        handle.write(tables)
    print(tables)
    return results


# ----------------------------------------------------------------------------------------------------------------
# Tables


def _values(results: dict, prefix: str, key: str, seeds) -> list[float]:
    runs = results["runs"]
    return [runs[f"{prefix}/seed{s}"][key] for s in seeds if f"{prefix}/seed{s}" in runs
            and runs[f"{prefix}/seed{s}"].get(key) is not None]


def mean_and_range(values, scale: float = 100.0, digits: int = 1) -> str:
    """`"mean (min-max)"` of `values` times `scale`; `"-"` when empty."""
    if not values:
        return "-"
    values = [scale * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def study_tables(results: dict, args: PretrainingStudyArguments) -> str:
    """The study's markdown tables from its results (missing runs shown as '-')."""
    seeds = args.seed_list
    lines = [f"Seeds {', '.join(map(str, seeds))}; mean (min-max) over seeds.", ""]
    lines += ["| labelled VQA questions | fine-tuning steps | pretrained (MLM+ITM+WPA) | from scratch | "
              "difference (points) | ranges overlap | majority answer |", "|---:|---:|---:|---:|---:|---|---:|"]
    baselines = results.get("majority_baseline", {})
    for budget in args.budget_list:
        pre = _values(results, f"vqa/pretrained/n{budget}", "vqa_score", seeds)
        scratch = _values(results, f"vqa/scratch/n{budget}", "vqa_score", seeds)
        gap = "-" if not (pre and scratch) else f"{100 * (np.mean(pre) - np.mean(scratch)):+.1f}"
        overlap = "-" if not (pre and scratch) else ("yes" if min(pre) <= max(scratch) else "no")
        baseline = mean_and_range([baselines[str(budget)]]) if str(budget) in baselines else "-"
        lines.append(f"| {budget} | {args.finetune_steps} | {mean_and_range(pre)} | {mean_and_range(scratch)} | "
                     f"{gap} | {overlap} | {baseline} |")
    kinds = sorted({kind for key, run in results["runs"].items() if key.startswith("vqa/")
                    for kind in run.get("by_question_type", {})})
    if kinds:
        lines += ["", "| question type, exact answers (pretrained / from scratch) | "
                  + " | ".join(f"{budget} labelled questions" for budget in args.budget_list) + " |",
                  "|---|" + "---:|" * len(args.budget_list)]
        for kind in kinds:
            cells = []
            for budget in args.budget_list:
                pair = []
                for name in ("pretrained", "scratch"):
                    runs = [results["runs"].get(f"vqa/{name}/n{budget}/seed{s}", {}) for s in seeds]
                    pair.append(mean_and_range([r["by_question_type"][kind] for r in runs
                                                if kind in r.get("by_question_type", {})], digits=0))
                cells.append(" / ".join(pair))
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    if args.downstream == "nlvr2":
        pre = _values(results, "nlvr2/pretrained", "accuracy", seeds)
        scratch = _values(results, "nlvr2/scratch", "accuracy", seeds)
        gap = "-" if not (pre and scratch) else f"{100 * (np.mean(pre) - np.mean(scratch)):+.1f}"
        lines += ["", "| NLVR2 (synthetic) | labelled pairs | steps | pretrained | from scratch | difference |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| accuracy (%) | {args.nlvr2_train_pairs} | {args.nlvr2_steps} | {mean_and_range(pre)} | "
                  f"{mean_and_range(scratch)} | {gap} |"]
    lines += ["", "| pretraining (held-out) | value |", "|---|---:|"]
    for label, key in (("MLM accuracy (%)", "mlm_accuracy"), ("ITM accuracy, matched pairs (%)",
                                                             "itm_accuracy_matched"),
                       ("ITM accuracy, replaced pairs (%)", "itm_accuracy_replaced"),
                       ("pointing accuracy, colour and shape words (%)", "pointing_accuracy"),
                       ("pointing accuracy, colour words (%)", "colour_pointing_accuracy"),
                       ("pointing accuracy, shape words (%)", "shape_pointing_accuracy"),
                       ("pointing by the nearest patch (cosine, no transport) (%)", "similarity_pointing_accuracy"),
                       ("pointing by the word's last-layer attention (%)", "attention_pointing_accuracy"),
                       ("pointing chance: a random patch (%)", "chance"),
                       ("pointing chance: mean box area share (%)", "box_area_share"),
                       ("masked colour word predicted (%)", "colour_masked_accuracy"),
                       ("masked shape word predicted (%)", "shape_masked_accuracy"),
                       ("masked count word predicted (%)", "count_masked_accuracy"),
                       ("masked left/right predicted (%)", "relation_masked_accuracy")):
        lines.append(f"| {label} | {mean_and_range(_values(results, 'pretrain/full', key, seeds))} |")
    pre_seconds = _values(results, "pretrain/full", "train_cpu_seconds", seeds)
    if pre_seconds:  # CPU time: the wall time of processes sharing cores says little
        lines.append(f"| pretraining CPU time per seed (s) | {np.mean(pre_seconds):.0f} |")
    if args.ablation_list:
        smallest = args.ablation_budget
        lines += ["", f"| ablation (VQA at {smallest} labelled questions) | VQA score | MLM accuracy | ITM matched | "
                  "ITM replaced | pointing (plan) | pointing (attention) |", "|---|---:|---:|---:|---:|---:|---:|"]
        rows = [("full: whole-word masking, WPA, no RandAugment", f"vqa/pretrained/n{smallest}", "full")]
        names = {"token_masking": "token masking instead of whole-word masking", "no_wpa": "without WPA",
                 "randaugment": "with RandAugment at fine-tuning"}
        rows += [(names[a], f"vqa/ablation_{a}/n{smallest}", ABLATIONS[a][0]) for a in args.ablation_list]
        rows.append(("no pretraining (scratch)", f"vqa/scratch/n{smallest}", None))
        for label, prefix, variant in rows:
            cells = [mean_and_range(_values(results, prefix, "vqa_score", seeds))]
            for key in ("mlm_accuracy", "itm_accuracy_matched", "itm_accuracy_replaced", "pointing_accuracy",
                        "attention_pointing_accuracy"):
                cells.append(mean_and_range(_values(results, f"pretrain/{variant}", key, seeds)) if variant else "-")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    seconds = sum(run.get("train_cpu_seconds", 0.0) for run in results["runs"].values())
    lines += ["", f"{len(results['runs'])} runs, {seconds / 60:.1f} min of training CPU time in all, "
              f"{results.get('torch_threads', '?')} torch thread(s) per process."]
    return "\n".join(lines) + "\n"
