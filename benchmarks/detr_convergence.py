"""How fast DETR learns at demo scale: COCO mAP on the held-out synthetic images against training steps, for plain
DETR, the training-only methods that keep the inference model a plain DETR, and the paper's ablations.

Every run is the demo's DETR recipe (`detrvilt.training.detr.demo.demo_configuration`: resnet10t DC5 from scratch,
d_model 128, 2 encoder + 6 decoder layers, 6 queries, 64-pixel synthetic shapes, 4500 steps of 8 images, lr 2e-4
dropped after step 3600) with one change, its *arm*:

- ``plain``: the demo as it is;
- ``group``: Group DETR (Chen et al., 2022), 11 groups of the 6 queries in training (the paper's 11 groups);
- ``hybrid``: H-DETR's hybrid matching (Jia et al., 2023), a one-to-many branch of 30 queries (5x the model's, as
  the paper's 1500 for 300) matched against the targets repeated 6 times, loss weight 1;
- ``encoder0``, ``no_giou``, ``no_aux``: the paper's ablations: no encoder layer (the paper's Table 2), no GIoU box
  loss (Table 4; the matching cost keeps its GIoU term), no auxiliary decoding losses (Sec. 3.2);
- ``*_short`` (``plain_short``, ``group_short``, ``hybrid_short``): the arm on a schedule of 1875 steps (the drop after
  step 1500), half the 3750 steps plain DETR needs to reach the demo's target: what a method must reach it with.
  Up to step 1500 it is the full run, so it continues the full run's checkpoint of that step when there is one
  (kept under ``<output_dir>/branches``), else it trains from the start;
- ``backbone_short``, a diagnostic: ``plain_short`` whose backbone starts as the final model's of ``plain`` with the
  same seed (kept under ``<output_dir>/final``), the transformer and heads new: how much of the steps go into
  learning the backbone's features from scratch, which no query-side method speeds up; ``group_backbone_short`` and
  ``hybrid_backbone_short``: the same start with the methods, whether they speed up the transformer's part.

The model is evaluated every ``--eval_every`` steps (and at the end) on the 200 held-out images: COCO mAP of the
final layer and of every decoder layer's output through the shared heads (the paper's Fig. 4). Each run writes
``<output_dir>/runs/<arm>_seed<seed>.json`` after every evaluation (so nothing is lost), saves a resumable checkpoint
every ``--checkpoint_every`` steps (the latest only) and continues from it when started again; finished runs are
skipped. ``--report`` reads all run files and writes the tables (``<output_dir>/tables.md``) and the pictures.

    python benchmarks/detr_convergence.py --arms plain,group,hybrid --seeds 0,1,2 --num_threads 1
    python benchmarks/detr_convergence.py --arms encoder0,no_giou,no_aux --seeds 0,1,2 --num_threads 1
    python benchmarks/detr_convergence.py --report --picture_dir docs/pictures

One run takes 10-20 minutes on one CPU thread (the groups cost about 1.6x per step). Seeds change the model's
initialisation and the shuffling; the data (training seed 0, held-out seed 1) and the flips stay the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

# The demo's targets: a method "reaches the target" at the first evaluation where both hold.
TARGETS = {"map_50": 0.7, "map": 0.4}
# Half the steps at which plain DETR first reaches the target (3750 of the demo's 4500, after its drop at 3600),
# with the drop at 80% as in the demo: what a method must reach the target with to be twice as fast.
SHORT = {"max_steps": 1875, "lr_drop_step": 1500}
# arm -> (what it is, overrides of DetrModelArguments, overrides of DemoArguments)
ARMS = {
    "plain": ("plain DETR (the demo)", {}, {}),
    "group": ("Group DETR, 11 query groups", {"num_query_groups": 11}, {}),
    "hybrid": ("H-DETR hybrid matching, 30 one-to-many queries, 6 repeats",
               {"hybrid_queries": 30, "hybrid_repeats": 6}, {}),
    "encoder0": ("no encoder layer", {"encoder_layers": 0}, {}),
    "no_giou": ("no GIoU loss", {"giou_loss_coefficient": 0.0}, {}),
    "no_aux": ("no auxiliary decoding losses", {"auxiliary_loss": False}, {}),
    "plain_short": ("plain DETR, short schedule", {}, SHORT),
    "group_short": ("Group DETR, short schedule", {"num_query_groups": 11}, SHORT),
    "hybrid_short": ("H-DETR hybrid matching, short schedule", {"hybrid_queries": 30, "hybrid_repeats": 6}, SHORT),
    "backbone_short": ("plain DETR, short schedule, backbone of plain's final model", {}, SHORT),
    "group_backbone_short": ("Group DETR, short schedule, backbone of plain's final model", {"num_query_groups": 11},
                             SHORT),
    "hybrid_backbone_short": ("H-DETR hybrid matching, short schedule, backbone of plain's final model",
                              {"hybrid_queries": 30, "hybrid_repeats": 6}, SHORT),
}
# Diagnostics: arm -> the full arm whose final model (same seed) gives this arm's backbone (the rest is new, as the
# seed initialises it). If backbone_short reaches the target on the short schedule and plain_short does not, learning
# the backbone's features from scratch is what takes the steps; the group and hybrid twins show whether the methods
# speed up the transformer once the features are there (as with a pretrained backbone).
BACKBONE_FROM = {"backbone_short": "plain", "group_backbone_short": "plain", "hybrid_backbone_short": "plain"}
BACKBONE_PREFIX = "model.backbone."
METRICS = ("map", "map_50", "map_75", "mar_100")


@dataclass
class ConvergenceArguments:
    """Which runs to make (or, with --report, which results to draw)."""

    output_dir: str = field(default="outputs/detr_convergence", metadata={
        "help": "Where runs/<arm>_seed<seed>.json, the checkpoints and tables.md go."})
    arms: str = field(default="plain,group,hybrid", metadata={"help": f"Comma-separated, from {list(ARMS)}."})
    seeds: str = field(default="0,1,2", metadata={"help": "Comma-separated seeds (model initialisation, shuffling)."})
    eval_every: int = field(default=250, metadata={"help": "Evaluate every this many steps (and at the end)."})
    checkpoint_every: int = field(default=500, metadata={
        "help": "Save a resumable checkpoint every this many steps (0: none; only the latest is kept)."})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads."})
    report: bool = field(default=False, metadata={"help": "Only read the run files and write tables and pictures."})
    picture_dir: str | None = field(default=None, metadata={
        "help": "With --report: where the pictures go (default: output_dir)."})
    progress_bar: bool = field(default=False, metadata={"help": "Show the training progress bar."})
    max_steps: int | None = field(default=None, metadata={
        "help": "For a quick check only: train this many steps (the drop at 80%%) instead of the arm's schedule."})
    train_images: int | None = field(default=None, metadata={
        "help": "For a quick check only: fewer synthetic training images than the demo's 5000."})
    eval_images: int | None = field(default=None, metadata={
        "help": "For a quick check only: fewer held-out images than the demo's 200."})

    def __post_init__(self):
        unknown = [arm for arm in self.arm_list() if arm not in ARMS]
        if unknown:
            raise ValueError(f"--arms: unknown {unknown}, choose from {list(ARMS)}")
        if self.eval_every < 1 or self.checkpoint_every < 0 or self.num_threads < 1:
            raise ValueError(f"--eval_every and --num_threads must be >= 1 and --checkpoint_every >= 0, got "
                             f"{self.eval_every}, {self.num_threads}, {self.checkpoint_every}")

    def arm_list(self) -> list[str]:
        return [a.strip() for a in self.arms.split(",") if a.strip()]

    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",") if s.strip()]


def code_fingerprint() -> str:
    """A hash of the DETR code (the model and loss in `modeling/detr`, the package's data and training code without
    ViLT's folders), stored with every run: runs to be compared must come from the same code."""
    import detrvilt.modeling.detr  # installed from the top-level modeling/ folder

    package = Path(detrvilt.__file__).parent
    digest = hashlib.sha256()
    for folder in (Path(detrvilt.modeling.detr.__file__).parent, package / "data", package / "training"):
        for path in sorted(folder.rglob("*.py")):
            if "vilt" not in path.relative_to(folder).parts:  # ViLT's code does not change a DETR run
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def write_json(path: Path, data: dict) -> None:
    """Write atomically (a run killed mid-write leaves the previous file)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def evaluate(model, eval_set, processor, batch_size: int = 50) -> dict:
    """COCO numbers of the final layer and `layers`: the same numbers for every decoder layer's output."""
    from detrvilt.data import DetrDataCollator
    from detrvilt.training.detr.metrics import coco_map_by_layer, detr_layers_eval_step

    step = detr_layers_eval_step(processor)
    collator = DetrDataCollator()
    records = []
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for start in range(0, len(eval_set), batch_size):
            records += step(model, collator([eval_set[i] for i in range(start, min(start + batch_size,
                                                                                    len(eval_set)))]))
    per_layer = coco_map_by_layer(records)
    scores = {key: per_layer[-1][key] for key in METRICS}
    scores["layers"] = {key: [layer[key] for layer in per_layer] for key in ("map", "map_50")}
    return scores


def claim(lock: Path) -> bool:
    """Create the run's lock file (holding this process's id) unless a live process holds it: several workers can
    share one list of runs. A lock left by a dead process is taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or "0"), 0)
                return False  # its holder is alive
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: try once more
                continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def run_arm(arm: str, seed: int, args: ConvergenceArguments) -> dict | None:
    """Train one (arm, seed) with evaluations, resuming from its latest checkpoint; returns the run's record (None
    when another worker is running it)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from detrvilt.data import DetrDataCollator
    from detrvilt.training.detr.demo import DemoArguments, demo_configuration
    from detrvilt.training.detr.optimization import create_detr_optimizer, create_step_scheduler
    from detrvilt.training.detr.recipes import build_image_processor, build_model, load_data, torch_datasets
    from detrvilt.training.loop import EpochShuffleSampler, train_loop

    description, model_overrides, demo_overrides = ARMS[arm]
    run_file = Path(args.output_dir) / "runs" / f"{arm}_seed{seed}.json"
    checkpoints = Path(args.output_dir) / "checkpoints" / f"{arm}_seed{seed}"
    record = json.loads(run_file.read_text()) if run_file.exists() else None
    if record is not None and record.get("done"):
        print(f"{arm} seed {seed}: done already, skipped")
        return record
    backbone_file = Path(args.output_dir) / "final" / f"{BACKBONE_FROM.get(arm)}_seed{seed}.safetensors"
    if arm in BACKBONE_FROM and not backbone_file.is_file() and not checkpoints.is_dir():
        raise FileNotFoundError(f"{backbone_file}: {arm} starts from this final model of {BACKBONE_FROM[arm]}; run "
                                f"that arm with seed {seed} first")
    lock = run_file.with_suffix(".lock")
    if not claim(lock):
        print(f"{arm} seed {seed}: another worker runs it, skipped")
        return None

    demo_args = replace(DemoArguments(progress_bar=args.progress_bar, seed=seed, vilt=False), **demo_overrides)
    if args.max_steps is not None:
        demo_args = replace(demo_args, max_steps=args.max_steps, lr_drop_step=int(0.8 * args.max_steps),
                            warmup_steps=min(demo_args.warmup_steps, args.max_steps // 4))
    for name in ("train_images", "eval_images"):
        if getattr(args, name) is not None:
            demo_args = replace(demo_args, **{name: getattr(args, name)})
    model_args, data_args, train_args = demo_configuration(demo_args)
    model_args = replace(model_args, **model_overrides)
    latest = max(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]), default=None)
    branched_from = None
    if latest is None and arm.endswith("_short") and arm.removesuffix("_short") in ARMS:
        # Until its drop the short schedule is the full one: start from the full run's checkpoint at that step.
        base = arm.removesuffix("_short")
        for folder in (Path(args.output_dir) / "branches", Path(args.output_dir) / "checkpoints"):
            source = folder / f"{base}_seed{seed}" / f"checkpoint-{SHORT['lr_drop_step']}"
            base_file = Path(args.output_dir) / "runs" / f"{base}_seed{seed}.json"
            if source.is_dir() and base_file.exists():
                checkpoints.mkdir(parents=True, exist_ok=True)
                latest = Path(shutil.copytree(source, checkpoints / source.name))
                branched_from = json.loads(base_file.read_text())
                break
    train_args = replace(train_args, output_dir=str(checkpoints), progress_bar=args.progress_bar,
                         logging_steps=math.gcd(train_args.logging_steps, args.eval_every),
                         checkpointing_steps=args.checkpoint_every or None,
                         resume_from_checkpoint=str(latest) if latest else None)
    resumed_at = int(latest.name.split("-")[1]) if latest else 0
    if branched_from is not None:
        resumed_at = SHORT["lr_drop_step"]
        record = {"arm": arm, "description": description, "seed": seed, "done": False,
                  "max_steps": train_args.max_steps, "lr_drop_step": train_args.lr_drop_step,
                  "model_args": asdict(model_args), "code": code_fingerprint(), "num_threads": args.num_threads,
                  "branched_from": branched_from["arm"], "resumed_at": [resumed_at],
                  "evals": [e for e in branched_from["evals"] if e["step"] <= resumed_at],
                  "log": [e for e in branched_from["log"] if e["step"] <= resumed_at]}
        record["train_seconds"] = record["evals"][-1]["train_seconds"]
        print(f"{arm} seed {seed}: continuing {branched_from['arm']}'s checkpoint at step {resumed_at}")
    elif record is None or not latest:
        record = {"arm": arm, "description": description, "seed": seed, "done": False,
                  "max_steps": train_args.max_steps, "lr_drop_step": train_args.lr_drop_step,
                  "model_args": asdict(model_args), "code": code_fingerprint(), "num_threads": args.num_threads,
                  "evals": [], "log": [], "train_seconds": 0.0}
    else:  # continue the record up to the checkpoint's step
        record["evals"] = [e for e in record["evals"] if e["step"] <= resumed_at]
        record["log"] = [e for e in record["log"] if e["step"] <= resumed_at]
        record["train_seconds"] = record["evals"][-1]["train_seconds"] if record["evals"] else 0.0
        record.setdefault("resumed_at", []).append(resumed_at)
        print(f"{arm} seed {seed}: resuming at step {resumed_at}")

    accelerator = Accelerator(cpu=True)
    set_seed(seed)  # as run_accelerate_training: the same initial model as the demo with this seed
    train, evaluation, id2label = load_data(data_args)
    processor = build_image_processor(data_args, num_labels=len(id2label))
    train_set, eval_set = torch_datasets(data_args, train, evaluation, processor)
    model = build_model(model_args, id2label)
    if arm in BACKBONE_FROM and latest is None:
        load_backbone(model, backbone_file)
    optimizer = create_detr_optimizer(model, train_args.learning_rate, train_args.backbone_learning_rate,
                                      train_args.weight_decay)
    scheduler = create_step_scheduler(optimizer, train_args.lr_drop_step, train_args.warmup_steps,
                                      train_args.lr_drop_gamma)
    sampler = EpochShuffleSampler(len(train_set), seed=seed)
    loader = DataLoader(train_set, batch_size=train_args.per_device_train_batch_size, sampler=sampler,
                        drop_last=True, collate_fn=DetrDataCollator(), num_workers=0,
                        generator=torch.Generator().manual_seed(seed))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    clock = {"eval": 0.0, "offset": record["train_seconds"]}  # training seconds exclude the evaluations

    def on_log(step, values):
        record["log"].append({"step": step, **{k: round(v, 5) for k, v in values.items()}})
        if step % args.eval_every and step != train_args.max_steps:
            return
        began = time.perf_counter()
        train_seconds = clock["offset"] + began - clock["start"] - clock["eval"]
        scores = evaluate(accelerator.unwrap_model(model), eval_set, processor)
        model.train()  # train_loop sets training mode once, at its start
        clock["eval"] += time.perf_counter() - began
        record["evals"].append({"step": step, "train_seconds": round(train_seconds, 1), **scores})
        record["train_seconds"] = round(train_seconds, 1)
        write_json(run_file, record)
        print(f"{arm} seed {seed} step {step}: mAP {scores['map']:.3f} mAP@0.5 {scores['map_50']:.3f} "
              f"(layers: {' '.join(f'{v:.2f}' for v in scores['layers']['map'])}) {train_seconds / 60:.1f} min",
              flush=True)
        # Keep the newest checkpoint only (the loop saves this step's after on_log returns), and the one a short
        # schedule of this arm starts from.
        for old in sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-1]:
            if not (f"{arm}_short" in ARMS and old.name == f"checkpoint-{SHORT['lr_drop_step']}"):
                shutil.rmtree(old, ignore_errors=True)

    run_file.parent.mkdir(parents=True, exist_ok=True)
    clock["start"] = time.perf_counter()
    train_loop(accelerator, model, optimizer, loader, train_args.loop_config(), scheduler=scheduler, sampler=sampler,
               on_log=on_log)
    if f"{arm}_short" in ARMS:  # the final weights, for the backbone diagnostic
        from safetensors.torch import save_file

        (Path(args.output_dir) / "final").mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()},
                  str(Path(args.output_dir) / "final" / f"{arm}_seed{seed}.safetensors"))
    record["done"] = True
    write_json(run_file, record)
    branch = checkpoints / f"checkpoint-{SHORT['lr_drop_step']}"
    if f"{arm}_short" in ARMS and branch.is_dir():
        (Path(args.output_dir) / "branches" / checkpoints.name).mkdir(parents=True, exist_ok=True)
        os.replace(branch, Path(args.output_dir) / "branches" / checkpoints.name / branch.name)
    shutil.rmtree(checkpoints, ignore_errors=True)
    lock.unlink(missing_ok=True)
    return record


def load_backbone(model, path: Path) -> int:
    """Copy the backbone's parameters and buffers (batch-norm statistics) from the saved state at `path` into `model`;
    returns how many tensors were copied. A missing file or a backbone of another shape is an error."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path}: the full run's final model is missing; run its arm (same seed) first")
    saved = {k: v for k, v in load_file(str(path)).items() if k.startswith(BACKBONE_PREFIX)}
    own = {k for k in model.state_dict() if k.startswith(BACKBONE_PREFIX)}
    if not saved or set(saved) != own:
        raise ValueError(f"{path}: its backbone tensors do not match the model's ({len(saved)} saved, {len(own)} "
                         f"in the model, {len(set(saved) ^ own)} differ by name)")
    missing, unexpected = model.load_state_dict(saved, strict=False)
    assert not unexpected and not any(k.startswith(BACKBONE_PREFIX) for k in missing)
    return len(saved)


# ------------------------------------------------------------------------------------------------------ the report

def steps_to_target(evals: list[dict]) -> int | None:
    """The first evaluated step at which both targets hold (None: never)."""
    for entry in evals:
        if all(entry[key] >= value for key, value in TARGETS.items()):
            return entry["step"]
    return None


def load_runs(output_dir: str) -> dict[str, list[dict]]:
    """Finished runs by arm, sorted by seed."""
    runs: dict[str, list[dict]] = {}
    for path in sorted((Path(output_dir) / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("done"):
            runs.setdefault(record["arm"], []).append(record)
    for records in runs.values():
        records.sort(key=lambda r: r["seed"])
    return runs


def mean_range(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ({values.min():.3f}-{values.max():.3f})"


def final(record: dict) -> dict:
    return record["evals"][-1]


def tables(runs: dict[str, list[dict]]) -> str:
    """The markdown tables of the report."""
    lines = []
    fingerprints = sorted({r["code"] for records in runs.values() for r in records})
    lines.append(f"Code fingerprint(s) of the runs: {', '.join(fingerprints)}.\n")
    plain = runs.get("plain", [])
    plain_steps = {r["seed"]: steps_to_target(r["evals"]) for r in plain}

    lines.append("### Steps to the demo's target (mAP@0.5 >= 0.7 and mAP >= 0.4), per seed\n")
    seeds = sorted({r["seed"] for records in runs.values() for r in records})
    lines.append("| arm | schedule | " + " | ".join(f"seed {s}" for s in seeds) + " | vs plain (same seed) |")
    lines.append("| --- | --- | " + " | ".join("---:" for _ in seeds) + " | ---: |")
    for arm, records in runs.items():
        by_seed = {r["seed"]: steps_to_target(r["evals"]) for r in records}
        cells = [str(by_seed[s]) if by_seed.get(s) is not None else ("not reached" if s in by_seed else "-")
                 for s in seeds]
        ratios = [by_seed[s] / plain_steps[s] for s in seeds
                  if by_seed.get(s) is not None and plain_steps.get(s) is not None]
        ratio = f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else "-"
        schedule = f"{records[0]['max_steps']} (drop {records[0]['lr_drop_step']})"
        lines.append(f"| {arm} | {schedule} | " + " | ".join(cells) + f" | {ratio} |")

    lines.append("\n### Final COCO numbers on the 200 held-out images: mean (min-max) over seeds\n")
    lines.append("| arm | what | seeds | steps | mAP@0.5 | mAP | mAP@0.75 | AR@100 | training min (1 thread) |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for arm, records in runs.items():
        cells = [mean_range([final(r)[key] for r in records]) for key in ("map_50", "map", "map_75", "mar_100")]
        minutes = np.mean([r["train_seconds"] / 60 for r in records])
        lines.append(f"| {arm} | {records[0]['description']} | {len(records)} | {records[0]['max_steps']} | "
                     + " | ".join(cells) + f" | {minutes:.1f} |")

    lines.append("\n### mAP@0.5 / mAP at checkpoints: mean over seeds\n")
    checkpoints = [500, 1000, 1500, 2000, 2250, 2500, 3000, 3500, 4000, 4500]
    lines.append("| arm | " + " | ".join(str(s) for s in checkpoints) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in checkpoints) + " |")
    for arm, records in runs.items():
        cells = []
        for step in checkpoints:
            entries = [e for r in records for e in r["evals"] if e["step"] == step]
            cells.append(f"{np.mean([e['map_50'] for e in entries]):.2f} / {np.mean([e['map'] for e in entries]):.2f}"
                         if len(entries) == len(records) else "-")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")

    lines.append("\n### Classification loss of the model's own queries (final layer): mean over seeds and steps\n")
    windows = [(1, 500), (501, 1000), (1001, 1500), (1501, 2000), (2001, 2500), (2501, 3000), (3001, 3500)]
    lines.append("| arm | " + " | ".join(f"steps {a - 1}-{b}" for a, b in windows) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in windows) + " |")
    for arm, records in runs.items():
        cells = []
        for first, last in windows:
            values = [e["loss_ce"] for r in records for e in r["log"] if first <= e["step"] <= last]
            cells.append(f"{np.mean(values):.3f}" if values and last <= records[0]["max_steps"] else "-")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")

    lines.append("\n### AP of each decoder layer's output (final step): mean (min-max) over seeds\n")
    num_layers = max(len(final(r)["layers"]["map"]) for rs in runs.values() for r in rs)
    lines.append("| arm | metric | " + " | ".join(f"layer {i + 1}" for i in range(num_layers)) + " |")
    lines.append("| --- | --- | " + " | ".join("---:" for _ in range(num_layers)) + " |")
    for arm, records in runs.items():
        for key, name in (("map", "mAP"), ("map_50", "mAP@0.5")):
            cells = [mean_range([final(r)["layers"][key][i] for r in records]) for i in range(num_layers)]
            lines.append(f"| {arm} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_count(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"


def plot_curves(runs: dict[str, list[dict]], arms: list[str], path: str, title: str) -> None:
    """mAP@0.5 and mAP against steps (mean over seeds, min-max band) for `arms`, with the demo's targets."""
    from detrvilt.viz.common import save_figure  # small palette PNGs

    figure = Figure(figsize=(12, 4.5))  # no pyplot: headless, nothing global
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for arm in arms:
        if arm not in runs:
            continue
        records = runs[arm]
        steps = [e["step"] for e in records[0]["evals"]]
        for axis, key in zip(axes, ("map_50", "map"), strict=True):
            values = np.array([[e[key] for e in r["evals"]] for r in records if len(r["evals"]) == len(steps)])
            line, = axis.plot(steps, values.mean(0), label=f"{arm} ({seed_count(len(values))})")
            axis.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    drops = sorted({r["lr_drop_step"] for arm in arms if arm in runs for r in runs[arm]})
    for axis, key, name in zip(axes, ("map_50", "map"), ("mAP@0.5", "mAP@[.5:.95]"), strict=True):
        axis.axhline(TARGETS[key], color="black", linestyle="--", linewidth=1, label=f"demo target {TARGETS[key]}")
        for drop in drops:
            axis.axvline(drop, color="gray", linestyle=":", linewidth=1)
        axis.set_xlabel("training step (batch 8)")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if drops:
        axes[1].set_title(f"dotted: learning rate / 10 after step {' and '.join(map(str, drops))}", fontsize=9)
    figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)


def plot_layers(runs: dict[str, list[dict]], arms: list[str], path: str) -> None:
    """AP of every decoder layer's output at the final step (mean and min-max over seeds)."""
    from detrvilt.viz.common import save_figure  # small palette PNGs

    figure = Figure(figsize=(12, 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for arm in arms:
        if arm not in runs:
            continue
        for axis, key in zip(axes, ("map_50", "map"), strict=True):
            values = np.array([final(r)["layers"][key] for r in runs[arm]])
            layers = np.arange(1, values.shape[1] + 1)
            axis.errorbar(layers, values.mean(0), yerr=[values.mean(0) - values.min(0), values.max(0) - values.mean(0)],
                          marker="o", capsize=3, label=f"{arm} ({seed_count(len(values))})")
    for axis, name in zip(axes, ("mAP@0.5", "mAP@[.5:.95]"), strict=True):
        axis.set_xlabel("decoder layer whose output is scored")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("AP after each decoder layer (final step; mean, min-max over seeds)")
    figure.tight_layout()
    save_figure(figure, path)


def report(args: ConvergenceArguments) -> str:
    runs = load_runs(args.output_dir)
    if not runs:
        raise ValueError(f"no finished run under {args.output_dir}/runs")
    runs = {arm: runs[arm] for arm in ARMS if arm in runs}
    text = tables(runs)
    Path(args.output_dir, "tables.md").write_text(text)
    picture_dir = Path(args.picture_dir or args.output_dir)
    picture_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(runs, ["plain", "group", "hybrid", "plain_short", "group_short", "hybrid_short", "backbone_short"],
                str(picture_dir / "detr_convergence.png"), "DETR at demo scale: held-out COCO mAP against steps")
    plot_curves(runs, ["plain_short", "backbone_short", "group_backbone_short", "hybrid_backbone_short"],
                str(picture_dir / "detr_convergence_backbone.png"),
                "Short schedule from plain DETR's trained backbone (transformer and heads new)")
    plot_curves(runs, ["plain", "encoder0", "no_giou", "no_aux"], str(picture_dir / "detr_convergence_ablations.png"),
                "The paper's ablations at demo scale")
    plot_layers(runs, ["plain", "group", "hybrid", "encoder0", "no_giou", "no_aux"],
                str(picture_dir / "detr_convergence_layers.png"))
    print(text)
    return text


def main(argv: list[str] | None = None) -> None:
    (args,) = HfArgumentParser(ConvergenceArguments, description=__doc__.split("\n\n")[0]).parse_args_into_dataclasses(
        args=argv)
    if args.report:
        report(args)
        return
    torch.set_num_threads(args.num_threads)
    for seed in args.seed_list():
        for arm in args.arm_list():
            run_arm(arm, seed, args)


if __name__ == "__main__":
    main()
