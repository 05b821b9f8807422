"""ViLT's data from a Hub dataset id or a local folder (`--dataset_name`, read with `datasets.load_dataset`), in the
columns the collators and `training/vilt/recipes.py` take, the same as `loaders.py`'s outputs:

- VQA: `image`, `question`, `answers` (a list of the annotators' answer strings; VQAv2's list of dicts with
  `answer` is turned into one, a single `answer` string into a list of one), `question_id` where present;
- captions (pretraining, retrieval): `image`, `captions` (a list of strings, from `captions`, or from `caption` /
  `text` as a string or a list);
- NLVR2: `image_0`, `image_1`, `text`, `label`, as in `loaders.TASK_COLUMNS`.

Every split gets an `image_id` (the row's position) where it has none.
"""

from __future__ import annotations

import datasets

from ..hub_datasets import load_named_splits, with_image_ids
from .loaders import TASK_COLUMNS

CAPTION_COLUMNS = ("captions", "caption", "text")


def _is_list(feature) -> bool:
    return isinstance(feature, (datasets.List, datasets.Sequence, datasets.LargeList, list))


def _answers_to_strings(dataset: datasets.Dataset, source: str) -> datasets.Dataset:
    if "answers" not in dataset.column_names:
        if "answer" not in dataset.column_names:
            raise ValueError(f"{source} has no 'answers' (or 'answer') column for VQA; its columns: "
                             f"{dataset.column_names}")
        return dataset.map(lambda answer: {"answers": [answer]}, input_columns="answer",
                           remove_columns=["answer"])
    feature = dataset.features["answers"]
    strings = _with(dataset, answers=datasets.List(datasets.Value("string")))
    if isinstance(feature, dict) and "answer" in feature:  # Sequence({"answer": ...}): a dict of lists
        return dataset.map(lambda answers: {"answers": list(answers["answer"])}, input_columns="answers",
                           features=strings)
    inner = getattr(feature, "feature", None)
    if _is_list(feature) and isinstance(inner, dict) and "answer" in inner:  # VQAv2: a list of dicts
        return dataset.map(lambda answers: {"answers": [a["answer"] for a in answers]}, input_columns="answers",
                           features=strings)
    if _is_list(feature) and isinstance(inner, datasets.Value) and inner.dtype in ("string", "large_string"):
        return dataset
    raise ValueError(f"{source}: 'answers' must be a list of strings or of dicts with 'answer', got {feature}")


def _with(dataset: datasets.Dataset, **columns) -> datasets.Features:
    features = dataset.features.copy()
    features.update(columns)
    return features


def _captions(dataset: datasets.Dataset, source: str) -> datasets.Dataset:
    column = next((c for c in CAPTION_COLUMNS if c in dataset.column_names), None)
    if column is None:
        raise ValueError(f"{source} has no caption column (one of {CAPTION_COLUMNS}); its columns: "
                         f"{dataset.column_names}")
    strings = datasets.List(datasets.Value("string"))
    if _is_list(dataset.features[column]):
        if column == "captions":
            return dataset
        return dataset.rename_column(column, "captions").cast_column("captions", strings)
    return dataset.map(lambda text: {"captions": [text]}, input_columns=column, remove_columns=[column],
                       features=_with(dataset.remove_columns([column]), captions=strings))


def to_vilt_layout(dataset: datasets.Dataset, task: str, source: str = "the dataset") -> datasets.Dataset:
    """`dataset` in the columns of `task` (`"pretrain"`, `"retrieval"`, `"vqa"` or `"nlvr2"`; see the module's
    docstring), with an `image_id` column.

    Raises:
        `ValueError` naming `source`, the missing columns and the columns there are.
    """
    kind = "captions" if task in ("pretrain", "retrieval") else task
    if kind not in TASK_COLUMNS:
        raise ValueError(f"task must be one of pretrain, retrieval, vqa, nlvr2, got {task!r}")
    if kind == "vqa":
        dataset = _answers_to_strings(dataset, source)
    elif kind == "captions":
        dataset = _captions(dataset, source)
    missing = [c for c in TASK_COLUMNS[kind] if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{source} has no column(s) {missing} for task {task!r}; its columns: "
                         f"{dataset.column_names}")
    return with_image_ids(dataset)


def hub_vilt_splits(name: str, task: str, config_name: str | None = None, train_split: str = "train",
                    eval_split: str | None = "validation") -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """`(train, eval)` of `task` from a Hub dataset id or a local folder ([`load_named_splits`]), in the columns of
    [`to_vilt_layout`]."""
    train, evaluation = load_named_splits(name, config_name, train_split, eval_split)
    train = to_vilt_layout(train, task, f"--dataset_name {name!r} split {train_split!r}")
    if evaluation is not None:
        evaluation = to_vilt_layout(evaluation, task, f"--dataset_name {name!r} split {eval_split!r}")
    return train, evaluation
