"""From parsed arguments to a trained, evaluated and saved ViLT, for every task: what the scripts and the demo call.

Tasks: `pretrain` (MLM + ITM + WPA on captions, one pass per step, see `ViltPretrainingCollator`), `vqa`, `nlvr2`,
`retrieval` (1 positive + K negative captions per image). Two drivers share the data, model and metric code:
[`run_vilt_trainer_training`] (`transformers.Trainer`, [`ViltTrainer`]) and [`run_vilt_accelerate_training`] (the
model-agnostic [`train_loop`] of `training/loop.py`, the same loop DETR trains with). The output folder is
Hub-ready: `config.json` (VQA: the answer vocabulary as `id2label`), `model.safetensors`, the processor files
(image processor + tokenizer) and `train_summary.json`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from ...data.streaming import StreamingExamples, load_stream
from ...data.vilt.collators import (
    BatchSeededCollator,
    IndexedExamples,
    ViltNLVR2Collator,
    ViltPretrainingCollator,
    ViltRetrievalCollator,
    ViltVQACollator,
)
from ...data.vilt.hub import hub_vilt_splits
from ...data.vilt.loaders import load_karpathy_captions, load_nlvr2, load_vilt_dataset_from_disk, load_vqav2
from ...data.vilt.synthetic import (
    VQA_ANSWERS,
    make_vilt_captions_dataset,
    make_vilt_nlvr2_dataset,
    make_vilt_vqa_dataset,
)
from ...data.vilt.tokenizer import default_vilt_tokenizer
from ...data.vilt.vqa import build_answer_vocabulary, label2id_from
from ...modeling.vilt import ViltConfig
from ...modeling.vilt.heads_vilt import (
    ViltForImageAndTextRetrieval,
    ViltForImagesAndTextClassification,
    ViltForPreTraining,
    ViltForQuestionAnswering,
)
from ...modeling.vilt.image_processing_vilt import MAX_LONGER_EDGE, MAX_SHORTER_EDGE, DetrviltViltImageProcessor
from ...modeling.vilt.processing_vilt import DetrviltViltProcessor
from ..loop import EpochShuffleSampler, default_loss_step, gather_eval_records, train_loop
from ..recipes import finish_tracking, make_accelerator, save_trained, start_tracking, streaming_train_loader
from ..sharding import model_for_saving, prepare_training
from ..trainer import train_until_stopped
from .arguments import ViltAccelerateArguments, ViltDataArguments, ViltModelArguments
from .metrics import (
    ViltImageCollator,
    ViltMetrics,
    batch_example_ids,
    caption_table,
    metrics_from_records,
    retrieval_eval_step,
    retrieval_recall_from_records,
    tokenize_texts,
    vilt_eval_step,
)
from .optimization import create_vilt_optimizer, create_vilt_scheduler

TASK_MODELS = {
    "pretrain": ViltForPreTraining,
    "vqa": ViltForQuestionAnswering,
    "nlvr2": ViltForImagesAndTextClassification,
    "retrieval": ViltForImageAndTextRetrieval,
}
# The official configs: x10 for the VQA and NLVR2 classifiers, x1 elsewhere.
DEFAULT_HEAD_LR_MULTIPLIER = {"pretrain": 1.0, "vqa": 10.0, "nlvr2": 10.0, "retrieval": 1.0}


# ----------------------------------------------------------------------------------------------------------------
# Data


def build_vilt_processor(data_args: ViltDataArguments, patch_size: int = 32, augment: bool = False
                         ) -> DetrviltViltProcessor:
    """The processor: the offline BERT uncased tokenizer (`max_text_length` tokens) and the pixelbert resize to
    `shortest_edge` (longer side at most 1333/800 of it), floored to multiples of `patch_size`."""
    shortest = data_args.shortest_edge
    longest = max(shortest, int(MAX_LONGER_EDGE / MAX_SHORTER_EDGE * shortest))
    image_processor = DetrviltViltImageProcessor(size={"shortest_edge": shortest, "longest_edge": longest},
                                                 size_divisor=patch_size, do_augment=augment)
    tokenizer = default_vilt_tokenizer(data_args.max_text_length)
    return DetrviltViltProcessor(image_processor, tokenizer, max_length=data_args.max_text_length)


def captions_to_texts(dataset: datasets.Dataset) -> datasets.Dataset:
    """One row per caption (`image`, `image_id`, `text`), for pretraining: every caption is an example."""
    if "captions" not in dataset.column_names:
        return dataset

    def expand(batch):
        rows = {"image": [], "image_id": [], "text": []}
        for image, image_id, captions in zip(batch["image"], batch["image_id"], batch["captions"], strict=True):
            for caption in captions:
                rows["image"].append(image)
                rows["image_id"].append(image_id)
                rows["text"].append(caption)
        return rows

    return dataset.map(expand, batched=True, remove_columns=dataset.column_names,
                       features=datasets.Features({"image": dataset.features["image"],
                                                   "image_id": datasets.Value("int64"),
                                                   "text": datasets.Value("string")}))


def _split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _files_split(data_args: ViltDataArguments, train: bool):
    task = data_args.task
    file = data_args.train_file if train else data_args.eval_file
    images = data_args.train_images_dir if train else (data_args.eval_images_dir or data_args.train_images_dir)
    if task in ("pretrain", "retrieval"):
        splits = _split_list(data_args.train_splits if train else data_args.eval_splits)
        return load_karpathy_captions(file or data_args.train_file, images, splits=splits)
    if file is None:
        return None
    if task == "vqa":
        annotations = data_args.train_annotations_file if train else data_args.eval_annotations_file
        return load_vqav2(file, images, annotations_path=annotations)
    return load_nlvr2(file, images)


def load_vilt_data(data_args: ViltDataArguments, load_train: bool = True
                   ) -> tuple[datasets.Dataset | None, datasets.Dataset | None, dict | None]:
    """`(train, eval, id2label)`: the task's datasets (`eval` may be None) and, for VQA, the answer vocabulary.

    Pretraining sets hold one row per caption (`text`); retrieval sets one row per image (`captions`). With
    `load_train=False` (a `--streaming` run, which trains on the stream) only the evaluation set is read (the
    synthetic training set is not built) and `train` and `id2label` are None.
    """
    task = data_args.task
    train = None
    if data_args.dataset_name:
        train, evaluation = hub_vilt_splits(data_args.dataset_name, task, data_args.dataset_config_name,
                                            data_args.train_split_name, data_args.eval_split_name)
    elif data_args.dataset == "synthetic":
        make = {"pretrain": make_vilt_captions_dataset, "retrieval": make_vilt_captions_dataset,
                "vqa": make_vilt_vqa_dataset, "nlvr2": make_vilt_nlvr2_dataset}[task]
        size, grid = data_args.synthetic_image_size, data_args.synthetic_grid or None
        if load_train:
            train = make(data_args.synthetic_train_size, seed=0, image_size=size, grid=grid)
        evaluation = make(data_args.synthetic_eval_size, seed=1, image_size=size, grid=grid)
    elif data_args.dataset == "files":
        train = _files_split(data_args, True) if load_train else None
        evaluation = _files_split(data_args, False)
    else:
        saved = load_vilt_dataset_from_disk(data_args.dataset_path,
                                            "captions" if task in ("pretrain", "retrieval") else task)
        if not isinstance(saved, datasets.DatasetDict):
            train, evaluation = saved, None
        else:
            if data_args.train_split not in saved:
                raise ValueError(f"--train_split {data_args.train_split!r} is not in {list(saved)}")
            train = saved[data_args.train_split]
            evaluation = saved[data_args.eval_split] if data_args.eval_split else None
    if not load_train:
        train = None
    if train is not None and data_args.max_train_examples is not None:
        train = train.select(range(min(data_args.max_train_examples, len(train))))
    if evaluation is not None and data_args.max_eval_examples is not None:
        evaluation = evaluation.select(range(min(data_args.max_eval_examples, len(evaluation))))
    if task == "pretrain":
        train = captions_to_texts(train) if train is not None else None
        evaluation = captions_to_texts(evaluation) if evaluation is not None else None
    id2label = None
    if task == "vqa" and train is not None:
        if data_args.dataset == "synthetic" and not data_args.dataset_name:
            id2label = dict(enumerate(VQA_ANSWERS))
        else:
            id2label = build_answer_vocabulary(train["answers"], min_count=data_args.answer_min_count)
    return train, evaluation, id2label


# The columns a `--streaming` run's rows must have, per task (the collators' columns).
STREAM_COLUMNS = {"pretrain": ("image", "text"), "vqa": ("image", "question", "answers"),
                  "nlvr2": ("image_0", "image_1", "text", "label"), "retrieval": ("image", "captions")}


def check_stream_columns(stream, task: str, source: str) -> None:
    """Raise `ValueError` naming `source` when its rows lack the columns `task`'s collator reads."""
    features = stream.features
    if features is None:
        return
    missing = [c for c in STREAM_COLUMNS[task] if c not in features]
    if missing:
        hint = (" (pretraining streams hold one caption per row: write the shards from captions_to_texts(dataset))"
                if task == "pretrain" and "captions" in features else "")
        raise ValueError(f"--stream_source {source!r} has no column(s) {missing} for task {task!r}{hint}; its "
                         f"columns: {sorted(features)}")


def stream_answer_vocabulary(data_args: ViltDataArguments, args) -> dict:
    """VQA's `id2label` of a `--streaming` run: one pass over the stream's `answers` column only (no image is
    read), answers given at least `--answer_min_count` times, as the map-style path builds it."""
    answers = load_stream(args.stream_source, args.stream_split, args.stream_key_column).select_columns(["answers"])
    return build_answer_vocabulary((row["answers"] for row in answers), min_count=data_args.answer_min_count)


def task_collator(task: str, processor, id2label: dict | None = None, mlm_probability: float = 0.15,
                  num_negatives: int = 15, seed: int = 0, whole_word_masking: bool = True):
    """The task's collator (its randomness seeded per batch, see [`BatchSeededCollator`]); the batches carry
    `example_index`. Needs datasets wrapped in [`IndexedExamples`]."""
    if task == "pretrain":
        collator = ViltPretrainingCollator(processor, mlm_probability=mlm_probability,
                                           whole_word_masking=whole_word_masking)
    elif task == "vqa":
        collator = ViltVQACollator(processor, label2id_from(id2label))
    elif task == "nlvr2":
        collator = ViltNLVR2Collator(processor)
    elif task == "retrieval":
        collator = ViltRetrievalCollator(processor, num_negatives=num_negatives)
    else:
        raise ValueError(f"task must be one of {sorted(TASK_MODELS)}, got {task!r}")
    return BatchSeededCollator(collator, seed=seed, return_indices=True)


# ----------------------------------------------------------------------------------------------------------------
# Model


def _config_kwargs(model_args: ViltModelArguments, data_args: ViltDataArguments, id2label: dict | None) -> dict:
    task = data_args.task
    kwargs = {"max_position_embeddings": data_args.max_text_length}
    if task == "vqa":
        kwargs.update(id2label={int(k): v for k, v in id2label.items()},
                      label2id={v: int(k) for k, v in id2label.items()})
    elif task == "nlvr2":
        kwargs.update(num_images=2, modality_type_vocab_size=3, id2label={0: "False", 1: "True"},
                      label2id={"False": 0, "True": 1})
    if task != "pretrain":
        kwargs["max_image_length"] = -1  # fine-tuning keeps every patch (the official configs)
    return kwargs


def load_timm_weights(model, model_args: ViltModelArguments) -> None:
    """Initialise `model`'s transformer from a timm ViT: `--vit_checkpoint` (a local state dict file) or timm's
    cached `--vit` (`--use_pretrained_vit`)."""
    from ...modeling.vilt.timm_vilt import load_pretrained_vit, load_timm_vit_weights

    if model_args.vit_checkpoint:
        path = model_args.vit_checkpoint
        if not os.path.isfile(path):
            raise ValueError(f"--vit_checkpoint {path!r} is not a file")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state_dict = load_file(path)
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state_dict, dict) and "model" in state_dict:  # a training checkpoint around the weights
            state_dict = state_dict["model"]
        load_timm_vit_weights(model, state_dict)
    elif model_args.use_pretrained_vit:
        load_pretrained_vit(model, model_args.vit)


@torch.no_grad()
def init_from_pretraining(task: str, pretrained: ViltForPreTraining, config_overrides: dict):
    """A fine-tuning model for `task` from a pretraining model: the transformer (embeddings, blocks, pooler) is
    copied, the MLM/ITM heads are dropped, the task head is new; retrieval's rank head starts from the ITM head's
    "match" row and NLVR2's second image modality type from the first image's (the official fine-tuning)."""
    if task == "pretrain":
        raise ValueError("init_from_pretraining is for fine-tuning tasks, got task='pretrain'")
    settings = pretrained.config.to_dict()
    # auto_map and custom_pipelines name the pretraining model's remote code and pipelines: the task model's are its
    # own (save_trained writes them).
    for key in ("architectures", "model_type", "transformers_version", "_name_or_path", "auto_map", "custom_pipelines",
                "num_labels"):
        settings.pop(key, None)
    settings.update(config_overrides)
    model = TASK_MODELS[task](ViltConfig(**settings))
    source = pretrained.vilt.state_dict()
    target = model.vilt.state_dict()
    table = "embeddings.modality_type_embeddings.weight"
    rows = source[table].shape[0]
    if target[table].shape[0] != rows:  # NLVR2: a third modality type for the second image
        target[table][:rows] = source[table]
        source = {k: v for k, v in source.items() if k != table}
    model.vilt.load_state_dict({**target, **source})
    if task == "nlvr2":
        model.init_second_image_modality()
    elif task == "retrieval":
        model.init_rank_output_from_itm(pretrained.itm_score)
    return model


def build_vilt_model(model_args: ViltModelArguments, data_args: ViltDataArguments, id2label: dict | None = None):
    """The model of `data_args.task`: fine-tuned from a pretraining checkpoint, continued from a task checkpoint,
    or new (optionally with timm ViT weights)."""
    task = data_args.task
    overrides = _config_kwargs(model_args, data_args, id2label)
    cls = TASK_MODELS[task]
    if model_args.model_name_or_path:
        config = ViltConfig.from_pretrained(model_args.model_name_or_path)
        architectures = config.architectures or []
        if task != "pretrain" and "ViltForPreTraining" in architectures:
            pretrained = ViltForPreTraining.from_pretrained(model_args.model_name_or_path)
            return init_from_pretraining(task, pretrained, overrides)
        if cls.__name__ not in architectures:
            raise ValueError(f"--model_name_or_path holds a {architectures} model; task {task!r} needs a "
                             f"{cls.__name__} or a ViltForPreTraining checkpoint")
        model = cls.from_pretrained(model_args.model_name_or_path)
        if task == "vqa" and model.config.num_labels != len(id2label):
            raise ValueError(f"--model_name_or_path answers {model.config.num_labels} labels but the data has "
                             f"{len(id2label)}")
        return model
    settings = dict(
        hidden_size=model_args.hidden_size, num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads, intermediate_size=model_args.intermediate_size,
        patch_size=model_args.patch_size, image_size=model_args.image_size,
        max_image_length=model_args.max_image_length, hidden_dropout_prob=model_args.hidden_dropout_prob,
        pretraining_objectives=_split_list(model_args.pretraining_objectives), vit=model_args.vit,
        wpa_loss_weight=model_args.wpa_loss_weight)
    config = ViltConfig(**{**settings, **overrides})
    model = cls(config)
    if model_args.vit_checkpoint or model_args.use_pretrained_vit:
        load_timm_weights(model, model_args)
    return model


# ----------------------------------------------------------------------------------------------------------------
# Accelerate


def vilt_loss_step(model, batch):
    """[`default_loss_step`] on the model's inputs and labels (the batch's `example_index` left out); pretraining
    batches (with `itm_labels`) run the MLM decoder on the masked tokens only (the same loss, cheaper)."""
    inputs = {k: v for k, v in batch.items() if k != "example_index"}
    if "itm_labels" in inputs and "labels" in inputs:
        inputs["mlm_masked_only"] = True
    return default_loss_step(model, inputs)


def evaluate_vilt(accelerator: Accelerator, model, task: str, eval_dataset, processor, batch_size: int,
                  id2label: dict | None = None, seed: int = 0, progress_bar: bool = True,
                  text_batch_size: int = 64) -> dict:
    """The task's metrics of `model` on `eval_dataset` across all processes, every example exactly once.

    VQA: the official VQA score against the annotators' answers; NLVR2: accuracy; pretraining: MLM and ITM accuracy
    (masking and negatives seeded, the same for every run); retrieval: recall@1/5/10 both ways over the full
    image x caption matrix (images split across processes, each scored against every caption in batches).
    """
    if task == "retrieval":
        texts, texts_of_image = caption_table(eval_dataset)
        step = retrieval_eval_step(tokenize_texts(processor, texts), text_batch_size)
        images = eval_dataset.select_columns(["image"]) if hasattr(eval_dataset, "select_columns") else eval_dataset
        loader = DataLoader(IndexedExamples(images), batch_size=batch_size, collate_fn=ViltImageCollator(processor))
        records = gather_eval_records(accelerator, model, accelerator.prepare(loader), step, progress_bar)
        return retrieval_recall_from_records(records, texts_of_image)
    collator = task_collator(task, processor, id2label, seed=seed + 1)
    loader = DataLoader(IndexedExamples(eval_dataset), batch_size=batch_size, collate_fn=collator)
    records = gather_eval_records(accelerator, model, accelerator.prepare(loader), vilt_eval_step(task),
                                  progress_bar)
    references = None
    if task == "vqa" and "answers" in eval_dataset.column_names:
        references = eval_dataset["answers"]
    elif task == "nlvr2" and "identifier" in eval_dataset.column_names:
        identifiers = eval_dataset["identifier"]
        if all(len(str(i).split("-")) >= 4 for i in identifiers):  # NLVR2's own ids: consistency too
            references = identifiers
    result = metrics_from_records(task, records, id2label, references)
    result["num_records"] = len(records)
    return result


def run_vilt_accelerate_training(model_args: ViltModelArguments, data_args: ViltDataArguments,
                                 args: ViltAccelerateArguments, accelerator: Accelerator | None = None,
                                 on_log=None) -> dict:
    """Train with [`train_loop`], evaluate, save model + processor to `args.output_dir`. Returns a summary dict
    (`losses`, `log`, `eval`, `train_seconds`, `train_cpu_seconds` (this process's CPU time, all threads),
    `model` (the plain trained model; None on the other processes after sharded training), `processor`, `id2label`,
    the datasets) on every process.

    With `args.streaming` the training set is `args.stream_source` read as a stream (`detrvilt.data.streaming`; rows
    in the task's columns, see [`STREAM_COLUMNS`]) and the evaluation set is `--dataset`'s / `--dataset_name`'s.
    Model, optimizer, loader and scheduler are prepared with [`prepare_training`] (sharded under an FSDP or
    DeepSpeed `accelerate launch` config, FSDP2 on CPU processes too), the saved model is gathered with
    [`model_for_saving`], and the run is reported to `--report_to`'s trackers."""
    accelerator = accelerator or make_accelerator(args.mixed_precision, args.cpu, args.report_to, args.output_dir)
    task = data_args.task
    set_seed(args.seed)
    if args.streaming:
        check_stream_columns(load_stream(args.stream_source, args.stream_split, args.stream_key_column), task,
                             args.stream_source)
        train, evaluation, _ = load_vilt_data(data_args, load_train=False)
        id2label = stream_answer_vocabulary(data_args, args) if task == "vqa" else None
    else:
        train, evaluation, id2label = load_vilt_data(data_args)
    model = build_vilt_model(model_args, data_args, id2label)
    patch_size = model.config.patch_size
    train_processor = build_vilt_processor(data_args, patch_size, augment=data_args.augment)
    processor = build_vilt_processor(data_args, patch_size)
    multiplier = args.head_lr_multiplier if args.head_lr_multiplier is not None else DEFAULT_HEAD_LR_MULTIPLIER[task]
    optimizer = create_vilt_optimizer(model, args.learning_rate, args.weight_decay, multiplier,
                                      betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    warmup = int(args.warmup) if args.warmup >= 1 else float(args.warmup)
    scheduler = create_vilt_scheduler(optimizer, args.max_steps, warmup)
    collator = task_collator(task, train_processor, id2label, data_args.mlm_probability, data_args.num_negatives,
                             args.seed, data_args.whole_word_masking)
    sampler = None
    if args.streaming:
        loader = streaming_train_loader(accelerator, args, StreamingExamples, args.per_device_train_batch_size,
                                        collator, num_workers=args.num_workers, seed=args.seed)
    else:
        train_set = IndexedExamples(train)
        sampler = EpochShuffleSampler(len(train_set), seed=args.seed)
        loader = DataLoader(train_set, batch_size=args.per_device_train_batch_size, sampler=sampler, drop_last=True,
                            collate_fn=collator, num_workers=args.num_workers,
                            generator=torch.Generator().manual_seed(args.seed))
    model, optimizer, loader, scheduler = prepare_training(
        accelerator, model, optimizer, loader, scheduler, gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_grad_norm=args.max_grad_norm or None)
    start_tracking(accelerator, os.path.basename(os.path.normpath(args.output_dir)),
                   {"model": asdict(model_args), "data": asdict(data_args), "train": asdict(args)})
    log = []

    def log_step(step, values):
        log.append({"step": step, **values})
        accelerator.print(f"step {step}/{args.max_steps} " + " ".join(f"{k} {v:.4g}" for k, v in values.items()))
        if on_log is not None:
            on_log(step, values)

    config = args.loop_config()
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = train_loop(accelerator, model, optimizer, loader, config, scheduler=scheduler, sampler=sampler,
                        loss_step=vilt_loss_step, describe_batch=batch_example_ids, on_log=log_step)
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    scores = None
    if evaluation is not None:
        scores = evaluate_vilt(accelerator, model, task, evaluation, processor, args.per_device_eval_batch_size,
                               id2label, seed=args.seed, progress_bar=args.progress_bar)
        accelerator.print(f"{task} evaluation: " + " ".join(f"{k} {v:.4g}" for k, v in scores.items()))
    finish_tracking(accelerator, scores, len(losses))
    accelerator.wait_for_everyone()
    plain = model_for_saving(accelerator, model)  # collective under sharding: every process calls it
    if accelerator.is_main_process:
        save_trained(plain, processor, args.output_dir, {
            "model_args": asdict(model_args), "data_args": asdict(data_args), "train_args": asdict(args),
            "losses": losses, "log": log, "eval": scores, "train_seconds": train_seconds,
            "train_cpu_seconds": train_cpu_seconds, "num_processes": accelerator.num_processes})
    accelerator.wait_for_everyone()
    return {"losses": losses, "log": log, "eval": scores, "train_seconds": train_seconds,
            "train_cpu_seconds": train_cpu_seconds, "model": plain,
            "processor": processor, "id2label": id2label, "train_dataset": train, "eval_dataset": evaluation}


# ----------------------------------------------------------------------------------------------------------------
# Trainer


def run_vilt_trainer_training(model_args: ViltModelArguments, data_args: ViltDataArguments, training_args) -> dict:
    """Train and evaluate with [`ViltTrainer`] (`training_args`: a [`ViltTrainingArguments`]), then save the model
    and processor to `training_args.output_dir`. Returns `{"train": ..., "eval": ..., "trainer": ...}`."""
    from .trainer import ViltTrainer

    task = data_args.task
    set_seed(training_args.seed)  # before the model is built: Trainer seeds only after, in its constructor
    train, evaluation, id2label = load_vilt_data(data_args)
    model = build_vilt_model(model_args, data_args, id2label)
    patch_size = model.config.patch_size
    train_processor = build_vilt_processor(data_args, patch_size, augment=data_args.augment)
    processor = build_vilt_processor(data_args, patch_size)
    compute_metrics = None
    eval_set = None
    if evaluation is not None and task != "retrieval":
        eval_set = IndexedExamples(evaluation)
        references = evaluation["answers"] if task == "vqa" and "answers" in evaluation.column_names else None
        compute_metrics = ViltMetrics(task, id2label, references)
    multiplier = getattr(training_args, "head_lr_multiplier", None)
    trainer = ViltTrainer(
        model=model, args=training_args, train_dataset=IndexedExamples(train), eval_dataset=eval_set,
        data_collator=task_collator(task, train_processor, id2label, data_args.mlm_probability,
                                    data_args.num_negatives, training_args.seed, data_args.whole_word_masking),
        compute_metrics=compute_metrics, task=task,
        head_lr_multiplier=DEFAULT_HEAD_LR_MULTIPLIER[task] if multiplier is None else multiplier,
        retrieval_eval_dataset=evaluation if task == "retrieval" else None, processor=processor,
        retrieval_text_batch_size=getattr(training_args, "retrieval_text_batch_size", 64),
        eval_data_collator=task_collator(task, processor, id2label, data_args.mlm_probability,
                                         data_args.num_negatives, training_args.seed + 1),
    )
    train_metrics = train_until_stopped(trainer, training_args.resume_from_checkpoint).metrics
    eval_metrics = trainer.evaluate() if evaluation is not None else None
    if trainer.is_world_process_zero():
        save_trained(trainer.model, processor, training_args.output_dir,
                     {"model_args": asdict(model_args), "data_args": asdict(data_args), "train": train_metrics,
                      "eval": eval_metrics})
    return {"train": train_metrics, "eval": eval_metrics, "trainer": trainer, "processor": processor,
            "id2label": id2label}
