"""COCO detection folders as `datasets.Dataset`s, and back.

`load_coco_detection(images_dir, annotation_file)` reads a COCO ``instances_*.json`` and returns one row per image in
the Hub's detection layout: `image_id`, `image` (a `datasets.Image` pointing at the file, decoded only when a row is
read), `file_name`, `width`, `height` and `objects` (`id`, `area`, `bbox` in COCO xywh absolute pixels, `category`,
`iscrowd`). Inconsistent files fail here, naming the file and the entry: unknown category or image ids, boxes that are
not four numbers, missing image files.

`write_coco_detection(dataset, output_dir, split)` writes any such dataset as ``output_dir/<split>/*`` images and
``output_dir/annotations/instances_<split>.json``, which pycocotools' `COCO` reads (annotation ids start at 1:
COCOeval treats id 0 as "no match").
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import datasets
from PIL import Image


def _read_json(annotation_file) -> dict:
    try:
        with open(annotation_file, encoding="utf-8") as handle:
            content = json.load(handle)
    except OSError as error:
        raise ValueError(f"cannot read the COCO annotation file {str(annotation_file)!r}: {error}") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"the COCO annotation file {str(annotation_file)!r} is not valid JSON: {error}") from error
    if not isinstance(content, Mapping) or "images" not in content or "categories" not in content:
        keys = sorted(content) if isinstance(content, Mapping) else type(content).__name__
        raise ValueError(
            f"the COCO annotation file {str(annotation_file)!r} must have 'images' and 'categories' (and usually "
            f"'annotations'), got {keys}"
        )
    return content


def coco_id2label(annotation_file_or_content) -> dict[int, str]:
    """`{class_id: name}` for every id from 0 to the largest category id, gaps named "N/A" (COCO's 1..90 -> 91 ids).

    That is the `id2label` a [`DetrConfig`] needs when class ids are COCO category ids (`num_labels` = largest + 1).
    """
    content = annotation_file_or_content
    if not isinstance(content, Mapping):
        content = _read_json(content)
    names = {int(c["id"]): str(c["name"]) for c in content["categories"]}
    if not names:
        return {}
    return {i: names.get(i, "N/A") for i in range(max(names) + 1)}


def detection_features(category_names: list[str] | None = None) -> datasets.Features:
    """The features of a detection dataset; `category` is a `ClassLabel` when names are given, else int64 ids."""
    category = datasets.ClassLabel(names=category_names) if category_names is not None else datasets.Value("int64")
    return datasets.Features({
        "image_id": datasets.Value("int64"),
        "image": datasets.Image(),
        "file_name": datasets.Value("string"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "objects": {
            "id": datasets.List(datasets.Value("int64")),
            "area": datasets.List(datasets.Value("float32")),
            "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
            "category": datasets.List(category),
            "iscrowd": datasets.List(datasets.Value("int8")),
        },
    })


def load_coco_detection(images_dir, annotation_file, check_files: bool = True) -> datasets.Dataset:
    """A COCO detection folder as a `datasets.Dataset` with lazily decoded images.

    Args:
        images_dir (`str` or `Path`): the folder the `file_name`s of the annotation file are relative to.
        annotation_file (`str` or `Path`): a COCO ``instances_*.json``.
        check_files (`bool`, defaults to `True`): fail now if an image file is missing (one `os.path.isfile` each).

    Returns:
        `datasets.Dataset`, one row per image in the order of the file. `objects.category` holds the COCO category
        ids; it is a `ClassLabel` (with the category names) when those ids are exactly 0..N-1, else int64 (use
        [`coco_id2label`] for names). Boxes are kept as written, including crowd or degenerate ones: the image
        processor removes and counts those.

    Raises:
        `ValueError` naming the file and the entry: unreadable JSON, duplicate image ids, an annotation whose image
        id or category id is not declared, a bbox that is not 4 numbers, a missing image file.
    """
    content = _read_json(annotation_file)
    where = f"COCO annotation file {str(annotation_file)!r}"
    categories = {}
    for category in content["categories"]:
        if not isinstance(category, Mapping) or "id" not in category or "name" not in category:
            raise ValueError(f"{where}: every category needs 'id' and 'name', got {category!r}")
        categories[int(category["id"])] = str(category["name"])

    images, objects = {}, {}
    for entry in content["images"]:
        if not isinstance(entry, Mapping) or "id" not in entry or "file_name" not in entry:
            raise ValueError(f"{where}: every image needs 'id' and 'file_name', got {entry!r}")
        image_id = int(entry["id"])
        if image_id in images:
            raise ValueError(f"{where}: image id {image_id} is declared twice")
        images[image_id] = entry
        objects[image_id] = {"id": [], "area": [], "bbox": [], "category": [], "iscrowd": []}

    for annotation in content.get("annotations", []):
        annotation_id = annotation.get("id")
        image_id = annotation.get("image_id")
        if image_id not in images:
            raise ValueError(f"{where}: annotation id {annotation_id} refers to the unknown image id {image_id!r}")
        category_id = annotation.get("category_id")
        file_name = images[image_id]["file_name"]
        if category_id not in categories:
            raise ValueError(
                f"{where}: annotation id {annotation_id} (image {file_name!r}) has the unknown category id "
                f"{category_id!r}; declared: {sorted(categories)}"
            )
        bbox = annotation.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in bbox):
            raise ValueError(
                f"{where}: annotation id {annotation_id} (image {file_name!r}) must have a bbox of 4 numbers "
                f"[x, y, width, height], got {bbox!r}"
            )
        record = objects[image_id]
        record["id"].append(int(annotation_id) if annotation_id is not None else -1)
        record["bbox"].append([float(v) for v in bbox])
        record["area"].append(float(annotation.get("area", bbox[2] * bbox[3])))
        record["category"].append(int(category_id))
        record["iscrowd"].append(int(annotation.get("iscrowd", 0)))

    paths = [os.path.join(os.fspath(images_dir), images[i]["file_name"]) for i in images]
    if check_files:
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"{where}: {len(missing)} image file(s) not found, the first: {missing[0]!r}")

    contiguous = sorted(categories) == list(range(len(categories)))
    names = [categories[i] for i in range(len(categories))] if contiguous else None
    data = {
        "image_id": list(images),
        "image": paths,
        "file_name": [images[i]["file_name"] for i in images],
        "width": [images[i].get("width") for i in images],
        "height": [images[i].get("height") for i in images],
        "objects": [objects[i] for i in images],
    }
    return datasets.Dataset.from_dict(data, features=detection_features(names))


def _category_table(dataset: datasets.Dataset, objects_column: str, id2label: Mapping | None) -> list[dict]:
    if id2label is not None:
        return [{"id": int(i), "name": str(n), "supercategory": "object"} for i, n in sorted(id2label.items())]
    feature = dataset.features[objects_column]["category"]
    inner = getattr(feature, "feature", feature)
    if isinstance(inner, datasets.ClassLabel):
        return [{"id": i, "name": n, "supercategory": "object"} for i, n in enumerate(inner.names)]
    ids = sorted({int(c) for row in dataset[objects_column] for c in row["category"]})
    return [{"id": i, "name": str(i), "supercategory": "object"} for i in ids]


def write_coco_detection(
    dataset: datasets.Dataset,
    output_dir,
    split: str = "train",
    id2label: Mapping[int, str] | None = None,
    image_column: str = "image",
    objects_column: str = "objects",
) -> tuple[Path, Path]:
    """Write a detection dataset (Hub layout, boxes COCO xywh absolute) as a COCO folder that pycocotools reads.

    Images go to ``output_dir/<split>/`` in their stored encoding (bytes are written as they are; files are copied),
    named by image id; annotations to ``output_dir/annotations/instances_<split>.json`` with ids 1, 2, ... Category
    ids are the dataset's class ids; their names come from `id2label`, else from the `ClassLabel`, else the id.

    Returns:
        `(images_dir, annotation_file)`, ready for `load_coco_detection` or `pycocotools.coco.COCO`.
    """
    output_dir = Path(output_dir)
    images_dir = output_dir / split
    annotation_file = output_dir / "annotations" / f"instances_{split}.json"
    images_dir.mkdir(parents=True, exist_ok=True)
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    raw = dataset.cast_column(image_column, datasets.Image(decode=False))

    images, annotations = [], []
    image_ids = dataset["image_id"] if "image_id" in dataset.column_names else list(range(len(dataset)))
    for row, image_id in zip(raw, image_ids, strict=True):
        stored = row[image_column]
        if stored.get("bytes") is not None:
            with Image.open(io.BytesIO(stored["bytes"])) as probe:
                width, height = probe.size
                extension = (probe.format or "png").lower().replace("jpeg", "jpg")
            file_name = f"{int(image_id):012d}.{extension}"
            (images_dir / file_name).write_bytes(stored["bytes"])
        else:
            with Image.open(stored["path"]) as probe:
                width, height = probe.size
            file_name = f"{int(image_id):012d}{Path(stored['path']).suffix.lower()}"
            shutil.copyfile(stored["path"], images_dir / file_name)
        images.append({"id": int(image_id), "file_name": file_name, "width": width, "height": height})
        objects = row[objects_column]
        count = len(objects["bbox"])
        for j in range(count):
            x, y, w, h = (float(v) for v in objects["bbox"][j])
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": int(image_id),
                "category_id": int(objects["category"][j]),
                "bbox": [x, y, w, h],
                "area": float(objects["area"][j]) if "area" in objects else w * h,
                "iscrowd": int(objects["iscrowd"][j]) if "iscrowd" in objects else 0,
            })
    content = {
        "info": {"description": f"written by detrvilt.data.write_coco_detection ({split})"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": _category_table(dataset, objects_column, id2label),
    }
    annotation_file.write_text(json.dumps(content))
    return images_dir, annotation_file
