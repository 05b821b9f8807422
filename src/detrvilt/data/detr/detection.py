"""From a detection `datasets.Dataset` to `model(**batch)`: the per-example transform and the collator.

A detection dataset here has the columns the Hub's detection datasets use (and `load_coco_detection` /
`make_shapes_dataset` produce): `image` (a `datasets.Image`), `image_id` (optional) and `objects`, a dict of lists with
`bbox` (COCO xywh in absolute pixels by default), `category` (class ids) and optionally `area`, `iscrowd`, `id`.

``dataset = prepare_detection_dataset(dataset, processor, augmentation=DetrTrainAugmentation())`` switches the image
column to undecoded storage (so that a broken file is reported with its path, not as a bare PIL error deep inside
`datasets`) and sets [`DetrDetectionTransform`] with `with_transform`: every access decodes, checks, augments and
normalizes on the fly. [`DetrDataCollator`] pads a list of such examples into a batch for `Trainer` or a DataLoader.
With `Trainer`, pass `remove_unused_columns=False` (the model's inputs are made by the transform, not stored).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torchvision.ops import box_convert

from ...modeling.detr.image_processing_detr import (
    DROP_REASONS,
    DetrviltDetrImageProcessor,
    encode_target,
    pad_images,
)
from ..images import decode_image

BBOX_FORMATS = ("xywh", "xyxy", "cxcywh")


def objects_to_annotation(objects: Mapping, image_id, bbox_format: str = "xywh") -> dict:
    """A Hub `objects` dict (boxes in `bbox_format`, absolute pixels) as the processor's Hub-objects annotation."""
    if not isinstance(objects, Mapping) or "bbox" not in objects or "category" not in objects:
        raise ValueError(f"objects must be a dict with 'bbox' and 'category' lists, got {objects!r}")
    annotation = {key: objects[key] for key in ("bbox", "category", "area", "iscrowd") if key in objects}
    if bbox_format != "xywh" and len(objects["bbox"]):
        boxes = torch.as_tensor(np.asarray(objects["bbox"], dtype=np.float64))
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"objects['bbox'] must be (n, 4) boxes in {bbox_format}, got shape {tuple(boxes.shape)}")
        annotation["bbox"] = box_convert(boxes, bbox_format, "xywh").tolist()
    annotation["image_id"] = -1 if image_id is None else int(image_id)
    return annotation


class DetrDetectionTransform:
    """The callable for `dataset.with_transform`: a batch of rows in, `pixel_values` and `labels` out.

    Args:
        image_processor ([`DetrviltDetrImageProcessor`]): supplies the annotation checks, the fixed resize (used when
            there is no augmentation), the normalization, `remove_crowd` and `num_labels`.
        augmentation (`Callable`, *optional*): `(image, target) -> (image, target)` on the decoded uint8 image and the
            target with XYXY `tv_tensors.BoundingBoxes`, e.g. [`DetrTrainAugmentation`]. Without it the processor's
            fixed resize is applied (validation).
        bbox_format (`str`, defaults to `"xywh"`): format of `objects["bbox"]` (absolute pixels): `"xywh"` (COCO),
            `"xyxy"` or `"cxcywh"`.
        image_column, objects_column, image_id_column (`str`): column names.

    Returns (from `__call__`):
        `{"pixel_values": [(3, h, w) float tensors], "labels": [dict]}`, the labels as the processor makes them
        (`class_labels`, `boxes` normalized cxcywh of the unpadded image, `image_id`, `orig_size`, `size`, `area`,
        `iscrowd`, `dropped`).
    """

    def __init__(
        self,
        image_processor: DetrviltDetrImageProcessor,
        augmentation: Callable | None = None,
        bbox_format: str = "xywh",
        image_column: str = "image",
        objects_column: str = "objects",
        image_id_column: str = "image_id",
    ):
        if bbox_format not in BBOX_FORMATS:
            raise ValueError(f"bbox_format must be one of {BBOX_FORMATS}, got {bbox_format!r}")
        self.image_processor = image_processor
        self.augmentation = augmentation
        self.bbox_format = bbox_format
        self.image_column = image_column
        self.objects_column = objects_column
        self.image_id_column = image_id_column

    def __call__(self, examples: Mapping[str, Sequence]) -> dict[str, list]:
        for column in (self.image_column, self.objects_column):
            if column not in examples:
                raise KeyError(f"the dataset has no column {column!r} (columns: {sorted(examples)})")
        image_ids = examples.get(self.image_id_column) or [None] * len(examples[self.image_column])
        pixel_values, labels = [], []
        for position, (image_value, objects, image_id) in enumerate(
            zip(examples[self.image_column], examples[self.objects_column], image_ids, strict=True)
        ):
            description = f"image_id {image_id}" if image_id is not None else f"example {position} of the batch"
            pixel, label = self.encode_example(image_value, objects, image_id, description)
            pixel_values.append(pixel)
            labels.append(label)
        return {"pixel_values": pixel_values, "labels": labels}

    def encode_example(self, image_value, objects, image_id=None, description: str = "example",
                       generator: torch.Generator | None = None):
        """One row: decoded, checked, augmented (or resized), normalized. Returns `(pixel_values, labels)`.

        `generator`, when given, is passed to the augmentation (`augmentation(image, target, generator=...)`), whose
        draws then depend on it alone (see [`SeededDetectionDataset`])."""
        processor = self.image_processor
        image = decode_image(image_value, description)
        annotation = objects_to_annotation(objects, image_id, self.bbox_format)
        try:
            target = processor.prepare_annotation(annotation, tuple(image.shape[-2:]))
        except (ValueError, TypeError) as error:
            raise type(error)(f"{description}: {error}") from error
        if self.augmentation is not None:
            if generator is not None:
                image, target = self.augmentation(image, target, generator=generator)
            else:
                image, target = self.augmentation(image, target)
        elif processor.do_resize:
            image, target = processor.resize(image, target)
        return processor.normalize_image(image), encode_target(target)


def prepare_detection_dataset(
    dataset: datasets.Dataset,
    image_processor: DetrviltDetrImageProcessor,
    augmentation: Callable | None = None,
    bbox_format: str = "xywh",
    image_column: str = "image",
    objects_column: str = "objects",
    image_id_column: str = "image_id",
) -> datasets.Dataset:
    """`dataset` with its images left undecoded and a [`DetrDetectionTransform`] set by `with_transform`.

    Rows then come out as `{"pixel_values": (3, h, w) FloatTensor, "labels": dict}`, computed on access (a new
    augmentation each time). The returned dataset is a new view; `dataset` itself is unchanged.
    """
    transform = DetrDetectionTransform(image_processor, augmentation, bbox_format, image_column, objects_column,
                                       image_id_column)
    return _undecoded_images(dataset, image_column).with_transform(transform)


def _undecoded_images(dataset: datasets.Dataset, image_column: str) -> datasets.Dataset:
    """`dataset` with its image column left undecoded: a broken file is then reported by `decode_image` with its
    path, not as a bare PIL error deep inside `datasets`."""
    if image_column in dataset.column_names and isinstance(dataset.features[image_column], datasets.Image):
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def example_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded by `(seed, epoch, index)` alone: an example's random draws in an epoch do not depend on
    which examples were drawn before it, in which process or worker, or whether the run was resumed (a DataLoader
    reads ahead of the training step, so draws from torch's global generator would depend on where a run stopped).
    The hash of a tuple of ints is the same in every Python process."""
    return torch.Generator().manual_seed(hash((int(seed), int(epoch), int(index))) & 0xFFFFFFFF)


class SeededDetectionDataset(torch.utils.data.Dataset):
    """A detection dataset whose training augmentation draws from [`example_generator`]`(seed, epoch, index)`.

    What [`prepare_detection_dataset`] gives, but as a map-style torch dataset that knows each row's index and the
    epoch (`set_epoch`, called by the training loop and by `DetrTrainer` at every epoch): the same example in the same
    epoch is augmented the same way in any process, any DataLoader worker, and after any resume.

    Args:
        dataset (`datasets.Dataset`): a detection dataset in the Hub layout (its image column is read undecoded).
        transform ([`DetrDetectionTransform`]): decodes, augments and normalizes a row; its augmentation must accept
            `generator=` (as [`DetrTrainAugmentation`] does).
        seed (`int`): the run's seed.

    Returns (from `__getitem__`): `{"pixel_values": (3, h, w) FloatTensor, "labels": dict}`.
    """

    def __init__(self, dataset: datasets.Dataset, transform: DetrDetectionTransform, seed: int = 0):
        if not isinstance(transform, DetrDetectionTransform):
            raise TypeError(f"transform must be a DetrDetectionTransform, got {type(transform).__name__}")
        for column in (transform.image_column, transform.objects_column):
            if column not in dataset.column_names:
                raise KeyError(f"the dataset has no column {column!r} (columns: {dataset.column_names})")
        self.dataset = _undecoded_images(dataset, transform.image_column)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New draws for a new epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[int(index)]
        transform = self.transform
        image_id = row.get(transform.image_id_column)
        description = f"image_id {image_id}" if image_id is not None else f"example {index}"
        generator = example_generator(self.seed, self.epoch, index) if transform.augmentation is not None else None
        pixel_values, labels = transform.encode_example(row[transform.image_column], row[transform.objects_column],
                                                        image_id, description, generator)
        return {"pixel_values": pixel_values, "labels": labels}


class DetrDataCollator:
    """Pad examples `{"pixel_values": (3, h, w), "labels": dict}` into one batch for `Trainer` or a DataLoader.

    Args:
        pad_size (`tuple[int, int]`, *optional*): `(H, W)` to pad every batch to (fixed shapes, e.g. for
            `torch.compile`); defaults to the largest image of each batch, rounded up to `pad_to_multiple_of`.
        pad_to_multiple_of (`int`, *optional*, defaults to 32): round the padded height and width up to a multiple
            of this (the backbone's stride). Why: the feature mask samples `pixel_mask` at every stride-th pixel
            only when the padded size is a multiple of the stride; otherwise a feature cell lying mostly over
            padding can count as valid, and an image's predictions change with the other images of its batch.
            `None` pads to the largest image exactly (transformers' behaviour).

    Returns (from `__call__`):
        `{"pixel_values": FloatTensor (B, 3, H, W), "pixel_mask": LongTensor (B, H, W) (1 on real pixels),
        "labels": list of B dicts}`. Label boxes are relative to each unpadded image, so padding leaves them as
        they are.
    """

    def __init__(self, pad_size: tuple[int, int] | None = None, pad_to_multiple_of: int | None = 32):
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of!r}")
        self.pad_size = pad_size
        self.pad_to_multiple_of = pad_to_multiple_of

    def _padded_size(self, features) -> tuple[int, int] | None:
        if self.pad_size is not None or self.pad_to_multiple_of is None:
            return self.pad_size
        multiple = self.pad_to_multiple_of
        height = max(f["pixel_values"].shape[-2] for f in features)
        width = max(f["pixel_values"].shape[-1] for f in features)
        return -(-height // multiple) * multiple, -(-width // multiple) * multiple

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if len(features) == 0:
            raise ValueError("the collator got an empty list of examples")
        for i, feature in enumerate(features):
            if "pixel_values" not in feature:
                raise KeyError(f"features[{i}] has no 'pixel_values' (keys: {sorted(feature)})")
        pixel_values, pixel_mask = pad_images([f["pixel_values"] for f in features], self._padded_size(features))
        batch = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
        if "labels" in features[0]:
            batch["labels"] = [f["labels"] for f in features]
        return batch


def count_dropped(labels: Sequence[Mapping]) -> dict[str, int]:
    """Sum the per-image `dropped` counts of a list of labels: `{reason: count}` over `DROP_REASONS`."""
    total = dict.fromkeys(DROP_REASONS, 0)
    for label in labels:
        for reason, count in label.get("dropped", {}).items():
            total[reason] = total.get(reason, 0) + int(count)
    return total
