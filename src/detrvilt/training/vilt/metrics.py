"""Evaluating ViLT: per-example records from model outputs, the metrics over them, and the full retrieval score
matrix scored by the cross-encoder in batches.

The same records serve the Accelerate loop (gathered across processes by [`gather_eval_records`], each carrying the
example's dataset position `index`, so every example counts exactly once) and `Trainer`'s `compute_metrics`
([`ViltMetrics`]). Metrics are the `evaluate` modules of `detrvilt.evaluation`: `vqa_score`, `nlvr2_accuracy`,
`mlm_accuracy`, `itm_accuracy`, `retrieval_recall`, and `wpa_pointing` for the word-patch alignment
([`wpa_pointing_scores`]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ...data.images import decode_image
from ...evaluation import load_metric

TASKS = ("pretrain", "vqa", "nlvr2", "retrieval")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "pixel_mask")


def model_inputs(batch: Mapping) -> dict:
    """The model's inputs of a collated batch (labels and bookkeeping such as `example_index` left out)."""
    return {key: batch[key] for key in MODEL_INPUTS if key in batch}


def batch_example_ids(batch: Mapping) -> list:
    """The dataset positions of a ViLT batch (`example_index`, see `BatchSeededCollator(return_indices=True)`), for
    error messages of the training loop."""
    index = batch.get("example_index")
    return index.tolist() if isinstance(index, torch.Tensor) else []


def task_records(task: str, outputs: Mapping, batch: Mapping) -> list[dict]:
    """Per-example records of one evaluation batch of `task` (not retrieval, which scores a matrix instead).

    - `vqa`: `{"index", "answer_id", "target_score"}` (the soft target of the predicted answer, when labels exist);
    - `nlvr2`: `{"index", "prediction", "label"}`;
    - `pretrain`: `{"index", "mlm_predictions", "mlm_labels"}` (masked positions only) and `{"itm_logits",
      "itm_label"}`.
    `index` is `batch["example_index"]` when present, else the position in the batch.
    """
    if task not in TASKS or task == "retrieval":
        raise ValueError(f"task must be one of {[t for t in TASKS if t != 'retrieval']}, got {task!r}")
    logits = outputs["logits"]
    size = (outputs["itm_logits"] if task == "pretrain" and outputs.get("itm_logits") is not None else logits).shape[0]
    indices = batch_example_ids(batch) or list(range(size))
    labels = batch.get("labels")
    records = []
    for row, index in enumerate(indices):
        record = {"index": int(index)}
        if task == "vqa":
            answer = int(logits[row].argmax())
            record["answer_id"] = answer
            if labels is not None:
                record["target_score"] = float(labels[row, answer])
        elif task == "nlvr2":
            record["prediction"] = int(logits[row].argmax())
            if labels is not None:
                record["label"] = int(labels[row])
        else:
            if logits is not None and labels is not None:
                masked = labels[row] != -100
                record["mlm_predictions"] = logits[row][masked].argmax(-1).tolist()
                record["mlm_labels"] = labels[row][masked].tolist()
            if outputs.get("itm_logits") is not None and batch.get("itm_labels") is not None:
                record["itm_logits"] = outputs["itm_logits"][row].float().tolist()
                record["itm_label"] = int(batch["itm_labels"][row])
        records.append(record)
    return records


def vilt_eval_step(task: str) -> Callable:
    """An `eval_step(model, batch) -> records` for [`gather_eval_records`] (see [`task_records`])."""
    if task not in TASKS or task == "retrieval":
        raise ValueError(f"task must be one of {[t for t in TASKS if t != 'retrieval']}, got {task!r}")

    def step(model, batch):
        outputs = model(**model_inputs(batch))  # no labels: the metrics need the logits, not the losses (nor WPA)
        outputs = {k: (v.detach().float().cpu() if isinstance(v, torch.Tensor) else v) for k, v in outputs.items()
                   if k in ("logits", "itm_logits")}
        return task_records(task, outputs, {k: (v.cpu() if isinstance(v, torch.Tensor) else v)
                                            for k, v in batch.items()})

    return step


def unique_records(records: Sequence[Mapping]) -> list[dict]:
    """One record per `index`, sorted by it (a distributed sampler may repeat examples to even out batches)."""
    unique = {}
    for record in records:
        unique.setdefault(int(record["index"]), record)
    return [unique[key] for key in sorted(unique)]


def metrics_from_records(task: str, records: Sequence[Mapping], id2label: Mapping | None = None,
                         references: Sequence | None = None) -> dict:
    """The task's metrics over records (deduplicated by `index`).

    Args:
        id2label: VQA's answer vocabulary (index -> answer string).
        references: VQA: per dataset position, the annotators' answers; with them `vqa_score` is the official VQA
            accuracy, without them the soft target of the predicted answer (ViLT's training-time score).
            NLVR2: optional identifiers per position (adds `consistency`).
    """
    ordered = unique_records(records)
    if not ordered:
        raise ValueError("no example to evaluate")
    result = {"num_examples": len(ordered)}
    if task == "vqa":
        if references is not None:
            if id2label is None:
                raise ValueError("the official VQA score needs id2label (answer strings of the predictions)")
            answers = [id2label[r["answer_id"]] if r["answer_id"] in id2label else id2label[str(r["answer_id"])]
                       for r in ordered]
            scored = load_metric("vqa_score").compute(predictions=answers,
                                                      references=[list(references[r["index"]]) for r in ordered])
            result["vqa_score"] = scored["vqa_score"]
        elif all("target_score" in r for r in ordered):
            result["vqa_score"] = float(np.mean([r["target_score"] for r in ordered]))
        else:
            raise ValueError("VQA records have no target scores and no references were given")
    elif task == "nlvr2":
        scored = load_metric("nlvr2_accuracy").compute(
            predictions=[r["prediction"] for r in ordered], references=[r["label"] for r in ordered],
            identifiers=None if references is None else [references[r["index"]] for r in ordered])
        result.update({k: v for k, v in scored.items() if k != "num_examples"})
    elif task == "pretrain":
        with_mlm = [r for r in ordered if "mlm_labels" in r]
        if with_mlm:
            result.update(load_metric("mlm_accuracy").compute(predictions=[r["mlm_predictions"] for r in with_mlm],
                                                              references=[r["mlm_labels"] for r in with_mlm]))
        with_itm = [r for r in ordered if "itm_label" in r]
        if with_itm:
            result.update(load_metric("itm_accuracy").compute(predictions=[r["itm_logits"] for r in with_itm],
                                                              references=[r["itm_label"] for r in with_itm]))
    else:
        raise ValueError(f"task must be 'vqa', 'nlvr2' or 'pretrain', got {task!r}")
    return result


def majority_vqa_score(train_answers: Sequence[Sequence[str]], eval_answers: Sequence[Sequence[str]]) -> dict:
    """The baseline that answers every question with the most common training answer: `{"answer", "vqa_score"}`."""
    from collections import Counter

    from ...data.vilt.vqa import normalize_answer

    counts = Counter(normalize_answer(a) for answers in train_answers for a in answers)
    if not counts:
        raise ValueError("train_answers holds no answer")
    answer = counts.most_common(1)[0][0]
    scored = load_metric("vqa_score").compute(predictions=[answer] * len(eval_answers),
                                              references=[list(a) for a in eval_answers])
    return {"answer": answer, "vqa_score": scored["vqa_score"]}


# ----------------------------------------------------------------------------------------------------------------
# Word-patch pointing


POINTING_SOURCES = {"plan": "word_grids", "similarity": "similarity_grids", "attention": "attention_grids"}


@torch.no_grad()
def wpa_pointing_scores(model, processor, examples: Sequence[Mapping], batch_size: int = 32,
                        word_kinds: Mapping[str, Sequence[str]] | None = None, source: str = "plan") -> dict:
    """The `wpa_pointing` metric of a ViLT's own IPOT plans (`wpa_transport` on its last layer, as the WPA loss and
    the alignment pictures compute them) over image-caption examples.

    Args:
        model: a detrvilt ViLT (`ViltForPreTraining`, or anything with a `.vilt`), run in eval mode.
        processor: its processor.
        examples: dicts with `image`, `text` and `groundings`: `(word_position, word, box)` triples, `word_position`
            indexing ``text.split()`` and `box` the named object's `(x0, y0, x1, y1)` in pixels of `image` (see
            `detrvilt.data.vilt.synthetic.make_vilt_pointing_examples`).
        batch_size (`int`): pairs per forward pass.
        word_kinds (`Mapping[str, Sequence[str]]`, *optional*): named groups of words (e.g. colours, shapes) to
            score separately as well; keys `"{name}_pointing_accuracy"` and `"{name}_chance"`.
        source (`str`): what a word points with: `"plan"` (its IPOT transport plan row, the metric), or, to see
            where the plan loses what the model knows, `"similarity"` (the patch its features are most similar to,
            the plan's cost without the equal-mass constraint) or `"attention"` (the patch its token attends to
            most in the last layer, mean of heads).

    Returns:
        The metric's `pointing_accuracy`, `chance`, `box_area_share`, `num_words` (and the per-group keys), and
        `num_words_truncated`: grounded words of captions cut at the processor's `max_length`, left out (counted).
    """
    from ...viz.vilt.alignment import word_patch_alignment

    if not examples:
        raise ValueError("examples is empty: nothing to point at")
    if source not in POINTING_SOURCES:
        raise ValueError(f"source must be one of {tuple(POINTING_SOURCES)}, got {source!r}")
    patch_size = int(getattr(model, "vilt", model).config.patch_size)
    predictions, references, sizes, words, truncated = [], [], [], [], 0
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start:start + batch_size])
        alignments = word_patch_alignment(model, processor, [e["image"] for e in chunk], [e["text"] for e in chunk])
        for example, alignment in zip(chunk, alignments, strict=True):
            expected = example["text"].lower().split()
            kept = len(alignment.words)
            # A caption longer than the processor's max_length is cut: its first words still map (a prefix).
            if not alignment.words or alignment.words != expected[:kept]:
                raise ValueError(f"the tokenizer's words {alignment.words} do not match the caption's words "
                                 f"{expected}: word positions cannot be mapped")
            height, width = alignment.resized_size
            scale_y, scale_x = height / alignment.image.shape[0], width / alignment.image.shape[1]
            for position, word, box in example["groundings"]:
                if position >= kept:
                    truncated += 1
                    continue
                predictions.append(getattr(alignment, POINTING_SOURCES[source])[position].tolist())  # (GH, GW)
                references.append([box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y])
                sizes.append((height, width))
                words.append(word)
    if not predictions:
        raise ValueError(f"no grounded word is left within the processor's max_length ({truncated} cut off)")
    metric = load_metric("wpa_pointing")
    result = metric.compute(predictions=predictions, references=references, patch_size=patch_size,
                            image_sizes=sizes)
    result["num_words_truncated"] = truncated  # grounded words past the text length, not scored
    for name, group in (word_kinds or {}).items():
        group = set(group)
        chosen = [k for k, word in enumerate(words) if word in group]
        if chosen:
            part = metric.compute(predictions=[predictions[k] for k in chosen],
                                  references=[references[k] for k in chosen], patch_size=patch_size,
                                  image_sizes=[sizes[k] for k in chosen])
            result[f"{name}_pointing_accuracy"], result[f"{name}_chance"] = part["pointing_accuracy"], part["chance"]
    return result


@torch.no_grad()
def masked_word_accuracy(model, processor, examples: Sequence[Mapping], word_kinds: Mapping[str, Sequence[str]],
                         batch_size: int = 64) -> dict:
    """What the MLM head reads from the image: each word of a kind (e.g. colours, shapes) masked alone, whole (all
    its pieces), in held-out image-caption pairs, and predicted from the rest of the caption and the image.

    Args:
        model: a `ViltForPreTraining` with the MLM objective, run in eval mode.
        processor: its processor.
        examples: dicts with `image` and `text`.
        word_kinds: named groups of words; a caption word (``text.split()``) in a group is masked in a copy of its
            pair of its own.
        batch_size (`int`): masked copies per forward pass.

    Returns:
        `{"{kind}_masked_accuracy": share of masked words whose every piece is predicted, "{kind}_masked_words":
        count}` for every kind with at least one word.
    """
    tokenizer = processor.tokenizer
    kind_of = {word: kind for kind, words in word_kinds.items() for word in words}
    copies = []  # (example index, token positions of the word, kind)
    for index, example in enumerate(examples):
        word_ids = tokenizer(example["text"], truncation=True, max_length=processor.max_length).word_ids()
        for position, word in enumerate(example["text"].split()):
            if word in kind_of:
                tokens = [t for t, w in enumerate(word_ids) if w == position]
                if tokens:
                    copies.append((index, tokens, kind_of[word]))
    model.eval()
    hits: dict[str, list[bool]] = {}
    for start in range(0, len(copies), batch_size):
        chunk = copies[start:start + batch_size]
        inputs = processor(images=[examples[i]["image"] for i, _, _ in chunk],
                           text=[examples[i]["text"] for i, _, _ in chunk])
        targets = inputs["input_ids"].clone()
        masked = torch.zeros_like(targets, dtype=torch.bool)
        for row, (_, tokens, _) in enumerate(chunk):
            masked[row, tokens] = True
        inputs["input_ids"] = targets.masked_fill(masked, tokenizer.mask_token_id)
        predictions = model(**inputs).logits.argmax(-1)  # (B, T)
        right = (predictions == targets) | ~masked
        for row, (_, _, kind) in enumerate(chunk):
            hits.setdefault(kind, []).append(bool(right[row].all()))
    result = {}
    for kind, values in hits.items():
        result[f"{kind}_masked_accuracy"] = float(np.mean(values))
        result[f"{kind}_masked_words"] = len(values)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Retrieval


def caption_table(dataset) -> tuple[list[str], list[list[int]]]:
    """All captions of a retrieval set, flattened: `(texts, text indices of each image)` (column `captions`, or
    `text`)."""
    texts, per_image = [], []
    columns = dataset.column_names if hasattr(dataset, "column_names") else list(dataset[0])
    column = "captions" if "captions" in columns else "text"
    for captions in dataset[column]:
        captions = [captions] if isinstance(captions, str) else list(captions)
        per_image.append(list(range(len(texts), len(texts) + len(captions))))
        texts += captions
    return texts, per_image


@torch.no_grad()
def score_images_against_texts(model, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None,
                               text_inputs: Mapping[str, torch.Tensor], text_batch_size: int = 64) -> torch.Tensor:
    """Cross-encoder scores of a batch of images against every text, `(num_images, num_texts)`.

    Each image is embedded once per chunk of `text_batch_size` texts and paired with all of them
    (`ViltForImageAndTextRetrieval` with `(B, K, T)` text inputs): the loop runs over chunks, never over pairs.

    Args:
        pixel_values (`(B, 3, H, W)`), pixel_mask (`(B, H, W)`): the images.
        text_inputs: `input_ids`, `attention_mask` (and `token_type_ids`) of every text, `(num_texts, T)`.
    """
    num_images = pixel_values.shape[0]
    num_texts = text_inputs["input_ids"].shape[0]
    device = pixel_values.device
    columns = []
    for start in range(0, num_texts, text_batch_size):
        chunk = {key: value[start:start + text_batch_size].to(device) for key, value in text_inputs.items()}
        grouped = {key: value[None].expand(num_images, *value.shape) for key, value in chunk.items()}  # (B, K, T)
        outputs = model(pixel_values=pixel_values, pixel_mask=pixel_mask, **grouped)
        columns.append(outputs["logits"].float())  # (B, K)
    return torch.cat(columns, dim=1)  # (B, num_texts)


def retrieval_eval_step(text_inputs: Mapping[str, torch.Tensor], text_batch_size: int = 64) -> Callable:
    """An `eval_step` over image batches (`pixel_values`, `pixel_mask`, `example_index`): records `{"index",
    "scores"}` with the image's scores against every text of `text_inputs`."""

    def step(model, batch):
        scores = score_images_against_texts(model, batch["pixel_values"], batch.get("pixel_mask"), text_inputs,
                                            text_batch_size).cpu()
        indices = batch_example_ids(batch) or list(range(scores.shape[0]))
        return [{"index": int(i), "scores": row.tolist()} for i, row in zip(indices, scores, strict=True)]

    return step


class ViltImageCollator:
    """Images only (retrieval evaluation): `pixel_values`, `pixel_mask`, and `example_index` from `_index`."""

    def __init__(self, processor, image_column: str = "image"):
        self.processor = processor
        self.image_column = image_column

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        images = [decode_image(e[self.image_column], f"example {e.get('_index', i)}") for i, e in enumerate(examples)]
        batch = dict(self.processor.image_processor(images))
        if all("_index" in e for e in examples):
            batch["example_index"] = torch.tensor([e["_index"] for e in examples])
        return batch


def retrieval_recall_from_records(records: Sequence[Mapping], texts_of_image: Sequence[Sequence[int]]) -> dict:
    """`retrieval_recall` over gathered `{"index", "scores"}` records (one per image, deduplicated)."""
    ordered = unique_records(records)
    if [r["index"] for r in ordered] != list(range(len(texts_of_image))):
        raise ValueError(f"retrieval records must cover images 0..{len(texts_of_image) - 1} exactly, got "
                         f"{len(ordered)} distinct images")
    return load_metric("retrieval_recall").compute(predictions=[r["scores"] for r in ordered],
                                                   references=[list(t) for t in texts_of_image])


def tokenize_texts(processor, texts: Sequence[str]) -> dict:
    """`input_ids`, `attention_mask`, `token_type_ids` of `texts`, `(num_texts, max_length)`."""
    encoding = processor.tokenizer(list(texts), padding="max_length", truncation=True,
                                   max_length=getattr(processor, "max_length", 40), return_tensors="pt")
    return dict(encoding)


class ViltMetrics:
    """`compute_metrics` for [`ViltTrainer`] on VQA, NLVR2 or pretraining.

    Receives what `ViltTrainer.prediction_step` returns: predictions (VQA/NLVR2: logits; pretraining: MLM argmax
    ids `(N, T)` and ITM logits `(N, 2)`) and labels (VQA: soft scores `(N, A)`; NLVR2: `(N,)`; pretraining: MLM
    labels and `itm_labels`), in the evaluation dataset's order.

    Args:
        task (`str`): `"vqa"`, `"nlvr2"` or `"pretrain"`.
        id2label, references: see [`metrics_from_records`] (VQA: the eval set's `answers` column gives the official
            score; without it, the soft target of the prediction).
    """

    def __init__(self, task: str, id2label: Mapping | None = None, references: Sequence | None = None):
        if task not in ("vqa", "nlvr2", "pretrain"):
            raise ValueError(f"task must be 'vqa', 'nlvr2' or 'pretrain' (retrieval is evaluated by "
                             f"ViltTrainer(retrieval_eval_dataset=...)), got {task!r}")
        self.task, self.id2label, self.references = task, id2label, references

    def __call__(self, eval_prediction) -> dict:
        predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
        if self.task == "pretrain":
            mlm_ids, itm_logits = predictions
            mlm_labels, itm_labels = labels
            outputs = {"logits": None, "itm_logits": torch.as_tensor(itm_logits)}
            records = task_records("pretrain", outputs, {"itm_labels": torch.as_tensor(itm_labels)})
            for record, ids, targets in zip(records, np.asarray(mlm_ids), np.asarray(mlm_labels), strict=True):
                masked = targets != -100
                record["mlm_predictions"], record["mlm_labels"] = ids[masked].tolist(), targets[masked].tolist()
        else:
            logits = predictions[0] if isinstance(predictions, tuple) else predictions
            records = task_records(self.task, {"logits": torch.as_tensor(logits)},
                                   {"labels": None if labels is None else torch.as_tensor(labels)})
        return metrics_from_records(self.task, records, self.id2label, self.references)
