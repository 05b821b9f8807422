"""From parsed arguments to a trained, evaluated and saved DETR: what the scripts and the demo call."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from ...data import (
    DetrDataCollator,
    DetrDetectionTransform,
    DetrTrainAugmentation,
    SeededDetectionDataset,
    prepare_detection_dataset,
)
from ...data.detr.shapes import make_shapes_dataset
from ...data.detr.sources import (
    InMemoryDetectionDataset,
    category_names,
    hub_detection_splits,
    load_detection_splits,
    parse_shapes,
)
from ...data.streaming import StreamingDetectionDataset, load_stream
from ...modeling.detr import DetrConfig, DetrForObjectDetection
from ...modeling.detr.image_processing_detr import DetrviltDetrImageProcessor
from ..loop import EpochShuffleSampler, gather_eval_records, train_loop
from ..recipes import finish_tracking, make_accelerator, save_trained, start_tracking, streaming_train_loader
from ..sharding import model_for_saving, prepare_training
from ..trainer import train_until_stopped
from .arguments import DetrAccelerateArguments, DetrDataArguments, DetrModelArguments
from .metrics import coco_map_from_records, detr_eval_step
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


def trains_on_synthetic(data_args: DetrDataArguments, streaming: bool = False) -> bool:
    """Whether the training images are the built-in synthetic shapes (no --dataset, --dataset_name or stream)."""
    return data_args.dataset == "synthetic" and not data_args.dataset_name and not streaming


def build_image_processor(data_args: DetrDataArguments, num_labels: int | None = None,
                          streaming: bool = False) -> DetrviltDetrImageProcessor:
    """The processor saved with the model: the resize the model was trained at."""
    if data_args.shortest_edge is not None:
        shortest = data_args.shortest_edge
    else:
        shortest = data_args.synthetic_image_size if trains_on_synthetic(data_args, streaming) else 800
    longest = data_args.longest_edge if data_args.longest_edge is not None else round(1333 * shortest / 800)
    return DetrviltDetrImageProcessor(size={"shortest_edge": shortest, "longest_edge": longest}, num_labels=num_labels)


def load_data(data_args: DetrDataArguments):
    """`(train, eval, id2label)` as `datasets.Dataset`s (Hub layout) and the class names."""
    if data_args.dataset_name:
        train, evaluation = hub_detection_splits(data_args.dataset_name, data_args.dataset_config_name,
                                                 data_args.train_split_name, data_args.eval_split_name)
        return train, evaluation, _id2label(train)
    train, evaluation = load_detection_splits(
        data_args.dataset, synthetic_train_size=data_args.synthetic_train_size,
        synthetic_eval_size=data_args.synthetic_eval_size, synthetic_options=synthetic_options(data_args),
        train_images_dir=data_args.train_images_dir, train_annotation_file=data_args.train_annotation_file,
        eval_images_dir=data_args.eval_images_dir, eval_annotation_file=data_args.eval_annotation_file,
        dataset_path=data_args.dataset_path, train_split=data_args.train_split, eval_split=data_args.eval_split)
    return train, evaluation, _id2label(train)


def _id2label(train) -> dict:
    names = category_names(train)
    if names is None:
        largest = max((max(objects["category"], default=-1) for objects in train["objects"]), default=-1)
        names = [str(i) for i in range(largest + 1)]
    if not names:
        raise ValueError("the training set has no object at all: nothing to learn")
    return dict(enumerate(names))


def load_eval_data(data_args: DetrDataArguments):
    """The evaluation split of `--dataset` / `--dataset_name` alone (a `--streaming` run trains on the stream), or
    None. The synthetic training set is not built."""
    if trains_on_synthetic(data_args):
        size = data_args.synthetic_eval_size
        return make_shapes_dataset(size, seed=1, **synthetic_options(data_args)) if size else None
    return load_data(data_args)[1]


def stream_id2label(stream, evaluation) -> dict:
    """The class names of a `--streaming` run: the `ClassLabel` of the stream's `objects.category` (as the map-style
    path reads them), else the evaluation set's; they must agree where both have them."""
    class _Features:  # category_names reads `.features`; a stream's may be None
        features = stream.features or {}

    names = category_names(_Features)
    eval_names = category_names(evaluation) if evaluation is not None else None
    if names is not None and eval_names is not None and names != eval_names:
        raise ValueError(f"the stream's classes {names} differ from the evaluation set's {eval_names}: evaluate on "
                         "data with the stream's classes (--dataset / --dataset_name, or --synthetic_eval_size 0)")
    names = names or eval_names
    if not names:
        raise ValueError("--stream_source has no class names (objects.category is not a ClassLabel) and there is no "
                         "evaluation set to take them from: write the shards from a dataset whose objects.category "
                         "is a ClassLabel (write_parquet_shards keeps it)")
    return dict(enumerate(names))


def torch_datasets(data_args: DetrDataArguments, train, evaluation, processor, seed: int = 0):
    """The training and evaluation datasets the DataLoader reads (lazy transforms, or in memory). Every random draw of
    the training set is a function of (`seed`, epoch, example index): resuming, the number of processes and of
    DataLoader workers change nothing."""
    shortest = processor.size["shortest_edge"]
    if data_args.in_memory:
        train_set = InMemoryDetectionDataset(train, processor, flip_prob=0.5 if data_args.augment else 0.0, seed=seed)
        eval_set = InMemoryDetectionDataset(evaluation, processor) if evaluation is not None else None
        return train_set, eval_set
    augmentation = DetrTrainAugmentation.scaled(shortest, processor.size["longest_edge"]) if data_args.augment else None
    train_set = SeededDetectionDataset(train, DetrDetectionTransform(processor, augmentation), seed=seed)
    eval_set = prepare_detection_dataset(evaluation, processor) if evaluation is not None else None
    return train_set, eval_set


def build_model(model_args: DetrModelArguments, id2label: dict) -> DetrForObjectDetection:
    """A saved model (`--model_name_or_path`) or a new one from the architecture arguments. The training-only
    options (query groups, hybrid branch) always come from the arguments: they are training choices, not part of
    the inference model."""
    training_options = {name: getattr(model_args, name) for name in (
        "num_query_groups", "hybrid_queries", "hybrid_repeats", "hybrid_loss_coefficient")}
    if model_args.model_name_or_path:
        config = DetrConfig.from_pretrained(model_args.model_name_or_path, **training_options)
        config.validate_detr()
        model = DetrForObjectDetection.from_pretrained(model_args.model_name_or_path, config=config)
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
        giou_loss_coefficient=model_args.giou_loss_coefficient, **training_options,
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


def streaming_detection_loader(accelerator: Accelerator, data_args: DetrDataArguments, args: DetrAccelerateArguments,
                               processor):
    """`(loader, id2label)` of a `--streaming` run: this process's share of `--stream_source`, transformed as the
    map-style path transforms `--dataset` (the paper's augmentation seeded by (seed, epoch, key)), batched by
    `DetrDataCollator`."""
    if data_args.in_memory:
        raise ValueError("--in_memory keeps a map-style dataset in memory; it cannot be combined with --streaming")
    shortest, longest = processor.size["shortest_edge"], processor.size["longest_edge"]
    augmentation = DetrTrainAugmentation.scaled(shortest, longest) if data_args.augment else None
    examples = functools.partial(StreamingDetectionDataset, transform=DetrDetectionTransform(processor, augmentation))
    return streaming_train_loader(accelerator, args, examples, args.per_device_train_batch_size, DetrDataCollator(),
                                  num_workers=args.num_workers, seed=args.seed)


def run_accelerate_training(model_args: DetrModelArguments, data_args: DetrDataArguments,
                            args: DetrAccelerateArguments, accelerator: Accelerator | None = None) -> dict:
    """Train with [`train_loop`], evaluate, save model + processor to `args.output_dir`. Returns a summary dict
    (`losses`, `log`, `eval`, `train_seconds`, `model`: the plain trained model, None on the other processes after
    sharded training) on every process.

    With `args.streaming` the training set is `args.stream_source` read as a stream (`detrvilt.data.streaming`) and
    the evaluation set is `--dataset`'s / `--dataset_name`'s. Model, optimizer, loader and scheduler are prepared
    with [`prepare_training`], so the run is sharded under an FSDP or DeepSpeed `accelerate launch` config (FSDP2 on
    CPU processes too), and the saved model is gathered with [`model_for_saving`]."""
    accelerator = accelerator or make_accelerator(args.mixed_precision, args.cpu, args.report_to, args.output_dir)
    set_seed(args.seed)
    sampler = None
    if args.streaming:
        evaluation = load_eval_data(data_args)
        id2label = stream_id2label(load_stream(args.stream_source, args.stream_split, args.stream_key_column),
                                   evaluation)
        processor = build_image_processor(data_args, num_labels=len(id2label), streaming=True)
        loader = streaming_detection_loader(accelerator, data_args, args, processor)
        eval_set = prepare_detection_dataset(evaluation, processor) if evaluation is not None else None
    else:
        train, evaluation, id2label = load_data(data_args)
        processor = build_image_processor(data_args, num_labels=len(id2label))
        train_set, eval_set = torch_datasets(data_args, train, evaluation, processor, seed=args.seed)
        sampler = EpochShuffleSampler(len(train_set), seed=args.seed)
        loader = DataLoader(train_set, batch_size=args.per_device_train_batch_size, sampler=sampler, drop_last=True,
                            collate_fn=DetrDataCollator(), num_workers=args.num_workers,
                            generator=torch.Generator().manual_seed(args.seed))
    model = build_model(model_args, id2label)
    optimizer = create_detr_optimizer(model, args.learning_rate, args.backbone_learning_rate, args.weight_decay)
    scheduler = create_step_scheduler(optimizer, args.lr_drop_step, args.warmup_steps, args.lr_drop_gamma)
    model, optimizer, loader, scheduler = prepare_training(
        accelerator, model, optimizer, loader, scheduler, gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_grad_norm=args.max_grad_norm or None)
    start_tracking(accelerator, os.path.basename(os.path.normpath(args.output_dir)),
                   {"model": asdict(model_args), "data": asdict(data_args), "train": asdict(args)})
    log = []

    def on_log(step, values):
        log.append({"step": step, **values})
        accelerator.print(f"step {step}/{args.max_steps} " + " ".join(
            f"{k} {v:.4g}" for k, v in values.items()))

    config = args.loop_config()
    start = time.perf_counter()
    losses = train_loop(accelerator, model, optimizer, loader, config, scheduler=scheduler, sampler=sampler,
                        on_log=on_log)
    train_seconds = time.perf_counter() - start
    scores = None
    if eval_set is not None:
        scores = evaluate_model(accelerator, model, eval_set, processor, args.per_device_eval_batch_size,
                                args.eval_threshold, args.progress_bar)
        accelerator.print(format_coco_table(scores))
    finish_tracking(accelerator, scores, len(losses))
    accelerator.wait_for_everyone()
    plain = model_for_saving(accelerator, model)  # collective under sharding: every process calls it
    if accelerator.is_main_process:
        save_trained(plain, processor, args.output_dir, {
            "model_args": asdict(model_args), "data_args": asdict(data_args), "train_args": asdict(args),
            "losses": losses, "log": log, "eval": scores, "train_seconds": train_seconds,
            "num_processes": accelerator.num_processes})
    accelerator.wait_for_everyone()
    return {"losses": losses, "log": log, "eval": scores, "train_seconds": train_seconds, "model": plain,
            "processor": processor, "eval_set": eval_set, "eval_dataset": evaluation}


def run_trainer_training(model_args: DetrModelArguments, data_args: DetrDataArguments, training_args) -> dict:
    """Train and evaluate with [`DetrTrainer`] (`training_args`: a [`DetrTrainingArguments`]), then save the model and
    processor to `training_args.output_dir`. Returns `{"train": train metrics, "eval": COCO metrics or None}`."""
    from ...modeling.detr import DetrLoss
    from .metrics import DetrCocoMetrics
    from .trainer import DetrTrainer

    set_seed(training_args.seed)  # before the model is built: Trainer seeds only after, in its constructor
    train, evaluation, id2label = load_data(data_args)
    processor = build_image_processor(data_args, num_labels=len(id2label))
    train_set, eval_set = torch_datasets(data_args, train, evaluation, processor, seed=training_args.seed)
    model = build_model(model_args, id2label)
    trainer = DetrTrainer(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=DetrDataCollator(), compute_metrics=DetrCocoMetrics(processor),
        compute_loss_func=None if training_args.use_model_loss else DetrLoss.from_config(model.config),
        backbone_learning_rate=training_args.backbone_learning_rate, lr_drop_step=training_args.lr_drop_step,
        lr_drop_gamma=training_args.lr_drop_gamma,
    )
    train_metrics = train_until_stopped(trainer, training_args.resume_from_checkpoint).metrics
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
