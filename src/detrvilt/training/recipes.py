"""From parsed arguments to a trained, evaluated and saved DETR: what the scripts and the demo call."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from ..data import DetrDataCollator, DetrTrainAugmentation, prepare_detection_dataset
from ..modeling.detr import DetrConfig, DetrForObjectDetection
from ..modeling.detr.image_processing_detr import DetrviltDetrImageProcessor
from .accelerate_loop import EpochShuffleSampler, LoopConfig, detr_eval_step, gather_eval_records, train_loop
from .arguments import DetrAccelerateArguments, DetrDataArguments, DetrModelArguments
from .data import InMemoryDetectionDataset, category_names, load_detection_splits, parse_shapes
from .metrics import coco_map_from_records
from .optimization import create_detr_optimizer, create_step_scheduler

COCO_TABLE = (
    ("map", "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"),
    ("map_50", "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]"),
    ("map_75", "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]"),
    ("map_small", "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]"),
    ("map_medium", "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]"),
    ("map_large", "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]"),
    ("mar_1", "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]"),
    ("mar_10", "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]"),
    ("mar_100", "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"),
    ("mar_small", "Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]"),
    ("mar_medium", "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]"),
    ("mar_large", "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]"),
)


def format_coco_table(scores: dict) -> str:
    """The twelve COCO numbers in pycocotools' layout."""
    return "\n".join(f" {text} = {scores[key]:.3f}" for key, text in COCO_TABLE if key in scores)


def synthetic_options(data_args: DetrDataArguments) -> dict:
    return {
        "image_size": data_args.synthetic_image_size,
        "shapes": parse_shapes(data_args.synthetic_shapes),
        "min_objects": data_args.synthetic_min_objects,
        "max_objects": data_args.synthetic_max_objects,
        "object_size": (data_args.synthetic_min_object_size, data_args.synthetic_max_object_size),
    }


def build_image_processor(data_args: DetrDataArguments, num_labels: int | None = None) -> DetrviltDetrImageProcessor:
    """The processor saved with the model: the resize the model was trained at."""
    if data_args.shortest_edge is not None:
        shortest = data_args.shortest_edge
    else:
        shortest = data_args.synthetic_image_size if data_args.dataset == "synthetic" else 800
    longest = data_args.longest_edge if data_args.longest_edge is not None else round(1333 * shortest / 800)
    return DetrviltDetrImageProcessor(size={"shortest_edge": shortest, "longest_edge": longest}, num_labels=num_labels)


def load_data(data_args: DetrDataArguments):
    """`(train, eval, id2label)` as `datasets.Dataset`s (Hub layout) and the class names."""
    train, evaluation = load_detection_splits(
        data_args.dataset, synthetic_train_size=data_args.synthetic_train_size,
        synthetic_eval_size=data_args.synthetic_eval_size, synthetic_options=synthetic_options(data_args),
        train_images_dir=data_args.train_images_dir, train_annotation_file=data_args.train_annotation_file,
        eval_images_dir=data_args.eval_images_dir, eval_annotation_file=data_args.eval_annotation_file,
        dataset_path=data_args.dataset_path, train_split=data_args.train_split, eval_split=data_args.eval_split)
    names = category_names(train)
    if names is None:
        largest = max((max(objects["category"], default=-1) for objects in train["objects"]), default=-1)
        names = [str(i) for i in range(largest + 1)]
    if not names:
        raise ValueError("the training set has no object at all: nothing to learn")
    return train, evaluation, dict(enumerate(names))


def torch_datasets(data_args: DetrDataArguments, train, evaluation, processor):
    """The training and evaluation datasets the DataLoader reads (lazy transforms, or in memory)."""
    shortest = processor.size["shortest_edge"]
    if data_args.in_memory:
        train_set = InMemoryDetectionDataset(train, processor, flip_prob=0.5 if data_args.augment else 0.0)
        eval_set = InMemoryDetectionDataset(evaluation, processor) if evaluation is not None else None
        return train_set, eval_set
    augmentation = DetrTrainAugmentation.scaled(shortest, processor.size["longest_edge"]) if data_args.augment else None
    train_set = prepare_detection_dataset(train, processor, augmentation=augmentation)
    eval_set = prepare_detection_dataset(evaluation, processor) if evaluation is not None else None
    return train_set, eval_set


def build_model(model_args: DetrModelArguments, id2label: dict) -> DetrForObjectDetection:
    """A saved model (`--model_name_or_path`) or a new one from the architecture arguments."""
    if model_args.model_name_or_path:
        model = DetrForObjectDetection.from_pretrained(model_args.model_name_or_path)
        if model.config.num_labels != len(id2label):
            raise ValueError(f"--model_name_or_path has {model.config.num_labels} classes but the data has "
                             f"{len(id2label)}")
        return model
    config = DetrConfig(
        backbone=model_args.backbone, use_pretrained_backbone=model_args.use_pretrained_backbone,
        dilation=model_args.dilation, freeze_backbone_stem=model_args.freeze_backbone_stem,
        freeze_batch_norm=model_args.freeze_batch_norm, d_model=model_args.d_model,
        encoder_layers=model_args.encoder_layers, decoder_layers=model_args.decoder_layers,
        encoder_attention_heads=model_args.attention_heads, decoder_attention_heads=model_args.attention_heads,
        encoder_ffn_dim=model_args.ffn_dim, decoder_ffn_dim=model_args.ffn_dim, num_queries=model_args.num_queries,
        dropout=model_args.dropout, attention_dropout=model_args.dropout, activation_dropout=model_args.dropout,
        auxiliary_loss=model_args.auxiliary_loss, eos_coefficient=model_args.eos_coefficient,
        id2label={int(k): v for k, v in id2label.items()}, label2id={v: int(k) for k, v in id2label.items()},
    )
    return DetrForObjectDetection(config)


def evaluate_model(accelerator: Accelerator, model, eval_set, processor, batch_size: int, threshold: float = 0.0,
                   progress_bar: bool = True) -> dict:
    """COCO mAP of `model` on `eval_set` across all processes, every image exactly once."""
    loader = accelerator.prepare(DataLoader(eval_set, batch_size=batch_size, shuffle=False,
                                            collate_fn=DetrDataCollator()))
    records = gather_eval_records(accelerator, model, loader, detr_eval_step(processor, threshold),
                                  progress_bar=progress_bar)
    return coco_map_from_records(records, deduplicate=True)


def make_accelerator(mixed_precision: str = "no", cpu: bool = False) -> Accelerator:
    """An `Accelerator` that also spans several CPU-only processes.

    accelerate joins processes started by `torchrun` / `accelerate launch --multi_gpu` into one gloo group only when
    told to use the CPU (`Accelerator(cpu=True)`); on a machine without an accelerator that is what the user means, so
    it is set there. (`accelerate launch --cpu --num_processes N` starts a single process unless MPI is set up.)
    """
    has_accelerator = torch.cuda.is_available() or torch.backends.mps.is_available() or (
        hasattr(torch, "xpu") and torch.xpu.is_available())
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu or not has_accelerator)


def loop_config_from_args(args) -> LoopConfig:
    """The [`LoopConfig`] of DETR's or ViLT's Accelerate arguments (the fields both dataclasses share)."""
    return LoopConfig(max_steps=args.max_steps, gradient_accumulation_steps=args.gradient_accumulation_steps,
                      max_grad_norm=args.max_grad_norm or None, logging_steps=args.logging_steps,
                      checkpointing_steps=args.checkpointing_steps, output_dir=args.output_dir,
                      resume_from_checkpoint=args.resume_from_checkpoint, progress_bar=args.progress_bar,
                      max_seconds=None if args.max_train_minutes is None else 60 * args.max_train_minutes)


def run_accelerate_training(model_args: DetrModelArguments, data_args: DetrDataArguments,
                            args: DetrAccelerateArguments, accelerator: Accelerator | None = None) -> dict:
    """Train with [`train_loop`], evaluate, save model + processor to `args.output_dir`. Returns a summary dict
    (`losses`, `log`, `eval`, `train_seconds`) on every process."""
    accelerator = accelerator or make_accelerator(args.mixed_precision, args.cpu)
    set_seed(args.seed)
    train, evaluation, id2label = load_data(data_args)
    processor = build_image_processor(data_args, num_labels=len(id2label))
    train_set, eval_set = torch_datasets(data_args, train, evaluation, processor)
    model = build_model(model_args, id2label)
    optimizer = create_detr_optimizer(model, args.learning_rate, args.backbone_learning_rate, args.weight_decay)
    scheduler = create_step_scheduler(optimizer, args.lr_drop_step, args.warmup_steps, args.lr_drop_gamma)
    sampler = EpochShuffleSampler(len(train_set), seed=args.seed)
    loader = DataLoader(train_set, batch_size=args.per_device_train_batch_size, sampler=sampler, drop_last=True,
                        collate_fn=DetrDataCollator(), num_workers=args.num_workers,
                        generator=torch.Generator().manual_seed(args.seed))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    log = []

    def on_log(step, values):
        log.append({"step": step, **values})
        accelerator.print(f"step {step}/{args.max_steps} " + " ".join(
            f"{k} {v:.4g}" for k, v in values.items()))

    config = loop_config_from_args(args)
    start = time.perf_counter()
    losses = train_loop(accelerator, model, optimizer, loader, config, scheduler=scheduler, sampler=sampler,
                        on_log=on_log)
    train_seconds = time.perf_counter() - start
    scores = None
    if eval_set is not None:
        scores = evaluate_model(accelerator, model, eval_set, processor, args.per_device_eval_batch_size,
                                args.eval_threshold, args.progress_bar)
        accelerator.print(format_coco_table(scores))
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        save_trained(unwrapped, processor, args.output_dir, {
            "model_args": asdict(model_args), "data_args": asdict(data_args), "train_args": asdict(args),
            "losses": losses, "log": log, "eval": scores, "train_seconds": train_seconds,
            "num_processes": accelerator.num_processes})
    accelerator.wait_for_everyone()
    return {"losses": losses, "log": log, "eval": scores, "train_seconds": train_seconds, "model": unwrapped,
            "processor": processor, "eval_set": eval_set, "eval_dataset": evaluation}


def save_trained(model, processor, output_dir: str, summary: dict | None = None) -> None:
    """The Hub-ready folder: `config.json` (with `auto_map`), `model.safetensors`, `preprocessor_config.json`, the
    `modeling/detr` files (remote code: loads with `trust_remote_code=True` where detrvilt is not installed) and
    `train_summary.json`."""
    from ..hub import save_for_hub

    os.makedirs(output_dir, exist_ok=True)
    save_for_hub(model, processor, output_dir)
    if summary is not None:
        with open(os.path.join(output_dir, "train_summary.json"), "w") as handle:
            json.dump(summary, handle, indent=1, default=str)


def run_trainer_training(model_args: DetrModelArguments, data_args: DetrDataArguments, training_args) -> dict:
    """Train and evaluate with [`DetrTrainer`] (`training_args`: a [`DetrTrainingArguments`]), then save the model and
    processor to `training_args.output_dir`. Returns `{"train": train metrics, "eval": COCO metrics or None}`."""
    from ..modeling.detr import DetrLoss
    from .metrics import DetrCocoMetrics
    from .trainer import DetrTrainer

    train, evaluation, id2label = load_data(data_args)
    processor = build_image_processor(data_args, num_labels=len(id2label))
    train_set, eval_set = torch_datasets(data_args, train, evaluation, processor)
    model = build_model(model_args, id2label)
    trainer = DetrTrainer(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=DetrDataCollator(), compute_metrics=DetrCocoMetrics(processor),
        compute_loss_func=None if training_args.use_model_loss else DetrLoss.from_config(model.config),
        backbone_learning_rate=training_args.backbone_learning_rate, lr_drop_step=training_args.lr_drop_step,
        lr_drop_gamma=training_args.lr_drop_gamma,
    )
    train_metrics = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint).metrics
    eval_metrics = None
    if eval_set is not None:
        eval_metrics = trainer.evaluate()
        if trainer.is_world_process_zero():
            print(format_coco_table({k.removeprefix("eval_"): v for k, v in eval_metrics.items()}))
    if trainer.is_world_process_zero():
        save_trained(trainer.model, processor, training_args.output_dir,
                     {"model_args": asdict(model_args), "data_args": asdict(data_args), "train": train_metrics,
                      "eval": eval_metrics})
    return {"train": train_metrics, "eval": eval_metrics}
