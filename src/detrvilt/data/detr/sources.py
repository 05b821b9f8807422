"""Detection data for the training scripts: the synthetic shapes set, a COCO folder, a Hub-format dataset saved on
disk or named as transformers' examples name one (`--dataset_name`: a Hub id or a local folder, through
`datasets.load_dataset`), and an in-memory copy of preprocessed images for small sets (no image decoding per step)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import datasets
import torch
from torch.utils.data import Dataset

from ..hub_datasets import load_named_splits, with_image_ids
from .coco import load_coco_detection
from .detection import example_generator, prepare_detection_dataset
from .shapes import make_shapes_dataset

DATA_SOURCES = ("synthetic", "coco", "disk")


def category_names(dataset: datasets.Dataset, objects_column: str = "objects") -> list[str] | None:
    """Class names from the dataset's `ClassLabel` (`objects.category`), or None when the ids are plain integers."""
    feature = dataset.features.get(objects_column)
    category = feature.get("category") if isinstance(feature, dict) else getattr(feature, "feature", {}).get("category")
    category = getattr(category, "feature", category)
    return list(category.names) if isinstance(category, datasets.ClassLabel) else None


def load_detection_splits(
    source: str,
    *,
    synthetic_train_size: int = 1000,
    synthetic_eval_size: int = 200,
    synthetic_options: dict | None = None,
    train_images_dir: str | None = None,
    train_annotation_file: str | None = None,
    eval_images_dir: str | None = None,
    eval_annotation_file: str | None = None,
    dataset_path: str | None = None,
    train_split: str = "train",
    eval_split: str = "validation",
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """`(train, eval)` detection datasets in the Hub layout (`image`, `image_id`, `objects`).

    Args:
        source (`str`): `"synthetic"` ([`make_shapes_dataset`], train seed 0 and eval seed 1, so the eval images are
            held out), `"coco"` (a COCO folder: images dir and annotation json per split) or `"disk"` (a `DatasetDict`
            written by `save_to_disk`, with `train_split` and `eval_split`).
    """
    if source == "synthetic":
        options = dict(synthetic_options or {})
        return (make_shapes_dataset(synthetic_train_size, seed=0, **options),
                make_shapes_dataset(synthetic_eval_size, seed=1, **options) if synthetic_eval_size else None)
    if source == "coco":
        if not train_images_dir or not train_annotation_file:
            raise ValueError("dataset='coco' needs train_images_dir and train_annotation_file")
        train = load_coco_detection(train_images_dir, train_annotation_file)
        evaluation = None
        if eval_images_dir or eval_annotation_file:
            if not (eval_images_dir and eval_annotation_file):
                raise ValueError("eval_images_dir and eval_annotation_file go together; got only one of them")
            evaluation = load_coco_detection(eval_images_dir, eval_annotation_file)
        return train, evaluation
    if source == "disk":
        if not dataset_path or not os.path.isdir(dataset_path):
            raise ValueError(
                f"dataset='disk' needs dataset_path, a folder written by save_to_disk; got {dataset_path!r}")
        loaded = datasets.load_from_disk(dataset_path)
        if not isinstance(loaded, datasets.DatasetDict):
            raise ValueError(f"dataset_path={dataset_path!r} holds one Dataset; a DatasetDict with splits is expected")
        if train_split not in loaded:
            raise ValueError(f"train_split={train_split!r} is not in {dataset_path!r} (splits: {list(loaded)})")
        if eval_split and eval_split not in loaded:
            raise ValueError(f"eval_split={eval_split!r} is not in {dataset_path!r} (splits: {list(loaded)})")
        return loaded[train_split], loaded[eval_split] if eval_split else None
    raise ValueError(f"dataset must be one of {DATA_SOURCES}, got {source!r}")


def to_detection_layout(dataset: datasets.Dataset, source: str = "the dataset") -> datasets.Dataset:
    """A Hub object-detection dataset (cppe-5's layout: `image`, `image_id`, `objects` with `bbox` in COCO
    `[x, y, w, h]` absolute pixels and `category` ids, optional `area` and `id`) in the layout the transforms read:
    `objects` as one dict of lists per image (a `List` of per-object dicts is turned into one), and an `image_id`
    (the row's position) where the dataset has none.

    Raises:
        `ValueError` naming `source` and its columns when `image` or `objects` (with `bbox` and `category`) is
        missing.
    """
    missing = [c for c in ("image", "objects") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{source} has no column(s) {missing} of the Hub object-detection layout (image, image_id, "
                         f"objects with bbox and category); its columns: {dataset.column_names}")
    feature = dataset.features["objects"]
    per_object = isinstance(feature, datasets.List) and isinstance(feature.feature, dict)
    fields = feature.feature if per_object else feature
    if not isinstance(fields, dict) or not {"bbox", "category"} <= set(fields):
        raise ValueError(f"{source}: 'objects' must hold 'bbox' (COCO xywh, absolute pixels) and 'category', got "
                         f"{feature}")
    if per_object:
        names = list(fields)

        def to_columns(objects):
            return {"objects": [{name: [item[name] for item in items] for name in names} for items in objects]}

        features = dataset.features.copy()
        features["objects"] = {name: datasets.List(value) for name, value in fields.items()}
        dataset = dataset.map(to_columns, input_columns="objects", batched=True, features=features)
    return with_image_ids(dataset)


def hub_detection_splits(name: str, config_name: str | None = None, train_split: str = "train",
                         eval_split: str | None = "validation") -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """`(train, eval)` of a dataset in the Hub object-detection layout (see [`to_detection_layout`]), from a Hub id
    or a local folder ([`load_named_splits`]); class names come from the `ClassLabel` of `objects.category`."""
    train, evaluation = load_named_splits(name, config_name, train_split, eval_split)
    train = to_detection_layout(train, f"--dataset_name {name!r} split {train_split!r}")
    if evaluation is not None:
        evaluation = to_detection_layout(evaluation, f"--dataset_name {name!r} split {eval_split!r}")
    return train, evaluation


class InMemoryDetectionDataset(Dataset):
    """Preprocessed examples `{"pixel_values", "labels"}` held in memory, with an optional horizontal flip.

    For small sets (the synthetic demo): decoding and resizing run once, not at every step. Whether an example is
    flipped is drawn from a generator seeded by `(seed, epoch, index)`, not from torch's global one: a DataLoader
    reads ahead of the training step, so a global draw would depend on where a run was stopped and resumed.

    Args:
        dataset: a detection `datasets.Dataset` (Hub layout).
        image_processor: resizes and normalizes each image once (its fixed `size`).
        flip_prob (`float`): probability of a horizontal flip at each access.
        seed (`int`): seed of the flips.
    """

    def __init__(self, dataset: datasets.Dataset, image_processor, flip_prob: float = 0.0, seed: int = 0):
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob!r}")
        prepared = prepare_detection_dataset(dataset, image_processor)
        self.examples = [prepared[i] for i in range(len(prepared))]
        self.flip_prob = flip_prob
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New flips for a new epoch (the training loop calls it)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        draw = example_generator(self.seed, self.epoch, index)
        if self.flip_prob and torch.rand((), generator=draw) < self.flip_prob:
            labels = dict(example["labels"])
            boxes = labels["boxes"].clone()
            boxes[:, 0] = 1.0 - boxes[:, 0]  # cx of normalized cxcywh
            labels["boxes"] = boxes
            return {"pixel_values": example["pixel_values"].flip(-1), "labels": labels}
        return example


def parse_shapes(value: str | Sequence[str]) -> tuple[str, ...]:
    """`"circle,square"` or a sequence -> a tuple of shape names."""
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    return tuple(s for s in names if s)
