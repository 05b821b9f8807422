"""A synthetic detection set: coloured shapes on noisy, textured backgrounds, small enough to train DETR on a CPU.

`make_shapes_dataset(num_images, seed)` draws each image from its own random stream (seeded by `(seed, index)`), so
a set is reproducible, and its first k images do not depend on how many are made. The class of an object is its
shape (circle, square, triangle, cross); its colour is drawn independently from a palette, so colour alone says
nothing about the class. Objects range from small (about a tenth of the image side) to large (about half of it),
may overlap, but every object keeps at least `min_visible` of its pixels visible. Boxes are the tight boxes of the
*visible* pixels (as COCO's boxes are), in COCO xywh absolute pixels; `area` is the visible pixel count.

The result has the Hub's detection layout (see `detrvilt.data.detr.coco.detection_features`), with `objects.category` a
`ClassLabel`; `write_coco_detection` writes it as a COCO folder for pycocotools.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import datasets
import numpy as np
import torch
from PIL import Image, ImageDraw

from .coco import detection_features

SHAPES = ("circle", "square", "triangle", "cross")
PALETTE = (
    (220, 40, 40),    # red
    (40, 170, 60),    # green
    (50, 90, 230),    # blue
    (240, 210, 40),   # yellow
    (200, 60, 200),   # magenta
    (40, 200, 210),   # cyan
    (245, 140, 30),   # orange
    (250, 250, 250),  # white
)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A (H, W, 3) float background: a muted colour, a gradient, soft blotches, sometimes stripes."""
    gray = rng.uniform(60, 185)
    image = np.full((height, width, 3), gray, dtype=np.float32) + rng.normal(0, 14, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(height, width)
    image += (rng.uniform(-35, 35) * ramp)[..., None]
    blotches = torch.from_numpy(rng.normal(0, 16, (1, 3, 4, 4)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(blotches, size=(height, width), mode="bicubic", align_corners=False)
    image += smooth[0].permute(1, 2, 0).numpy()  # (H, W, 3)
    if rng.random() < 0.3:
        period = rng.uniform(6, 16)
        phase = xs * math.cos(angle + 1.0) + ys * math.sin(angle + 1.0)
        image += (10 * np.sin(2 * math.pi * phase / period))[..., None]
    return image


def _shape_mask(shape: str, height: int, width: int, box: tuple[int, int, int, int], rng) -> np.ndarray:
    """A (H, W) bool mask of `shape` drawn inside `box` = (x0, y0, x1, y1), x1/y1 exclusive."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = box
    right, bottom = x1 - 1, y1 - 1
    if shape == "circle":
        draw.ellipse([x0, y0, right, bottom], fill=1)
    elif shape == "square":
        draw.rectangle([x0, y0, right, bottom], fill=1)
    elif shape == "triangle":
        middle = (x0 + right) / 2
        if rng.random() < 0.5:  # apex up or down
            draw.polygon([(x0, bottom), (right, bottom), (middle, y0)], fill=1)
        else:
            draw.polygon([(x0, y0), (right, y0), (middle, bottom)], fill=1)
    elif shape == "cross":
        arm_w, arm_h = max(2, (x1 - x0) // 3), max(2, (y1 - y0) // 3)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle([cx - arm_w // 2, y0, cx - arm_w // 2 + arm_w - 1, bottom], fill=1)
        draw.rectangle([x0, cy - arm_h // 2, right, cy - arm_h // 2 + arm_h - 1], fill=1)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return np.asarray(canvas, dtype=bool)


def render_shapes_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    shapes: Sequence[str] = SHAPES[:3],
    num_objects: int = 3,
    object_size: tuple[float, float] = (0.12, 0.5),
    min_visible: float = 0.7,
    noise: float = 8.0,
    max_tries: int = 30,
) -> tuple[Image.Image, dict]:
    """One synthetic image and its objects.

    Returns:
        The RGB image and `{"bbox": [[x, y, w, h], ...] (COCO xywh, absolute, tight around the visible pixels),
        "category": [index into shapes], "area": [visible pixel count]}`. Fewer than `num_objects` objects are placed
        when `max_tries` draws cannot keep every object `min_visible` visible.
    """
    image = _background(rng, height, width)
    owner = np.full((height, width), -1, dtype=np.int64)  # which object is on top at each pixel
    full_areas, classes = [], []
    side = min(height, width)
    for _ in range(num_objects):
        for _ in range(max_tries):
            size = side * math.exp(rng.uniform(math.log(object_size[0]), math.log(object_size[1])))
            aspect = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
            w = int(min(width, max(6, round(size * math.sqrt(aspect)))))
            h = int(min(height, max(6, round(size / math.sqrt(aspect)))))
            x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            label = int(rng.integers(len(shapes)))
            mask = _shape_mask(shapes[label], height, width, (x0, y0, x0 + w, y0 + h), rng)
            candidate = owner.copy()
            candidate[mask] = len(classes)
            visible = [np.count_nonzero(candidate == i) / full_areas[i] for i in range(len(classes))]
            if all(v >= min_visible for v in visible) and mask.any():
                break
        else:
            continue
        # A colour far enough from the background under the object.
        under = image[mask].mean(axis=0)
        order = rng.permutation(len(PALETTE))
        colour = next((PALETTE[i] for i in order if np.linalg.norm(np.subtract(PALETTE[i], under)) > 90),
                      PALETTE[order[0]])
        image[mask] = np.asarray(colour, dtype=np.float32) + rng.normal(0, 10, 3).astype(np.float32)
        owner = candidate
        full_areas.append(np.count_nonzero(mask))
        classes.append(label)

    image += rng.normal(0, noise, image.shape).astype(np.float32)
    bboxes, areas = [], []
    for i in range(len(classes)):
        rows, cols = np.nonzero((owner == i).any(axis=1))[0], np.nonzero((owner == i).any(axis=0))[0]
        x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
        bboxes.append([float(x0), float(y0), float(x1 - x0), float(y1 - y0)])
        areas.append(float(np.count_nonzero(owner == i)))
    pil = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))
    return pil, {"bbox": bboxes, "category": classes, "area": areas}


def make_shapes_dataset(
    num_images: int = 1000,
    seed: int = 0,
    image_size: int | tuple[int, int] = 128,
    shapes: Sequence[str] = ("circle", "square", "triangle"),
    max_objects: int = 5,
    min_objects: int = 0,
    object_size: tuple[float, float] = (0.12, 0.5),
    min_visible: float = 0.7,
    noise: float = 8.0,
) -> datasets.Dataset:
    """The synthetic shapes detection set as a `datasets.Dataset`.

    Args:
        num_images (`int`): number of images.
        seed (`int`): image `i` is drawn from `numpy.random.default_rng((seed, i))`; use different seeds for the
            train and validation splits.
        image_size (`int` or `(min, max)`): square side, or the range each side is drawn from (padding then
            matters within a batch).
        shapes (`Sequence[str]`): the classes, a subset of `SHAPES` in any order (class id = position).
        max_objects, min_objects (`int`): the number of objects per image is uniform in [min_objects, max_objects].
        object_size (`tuple[float, float]`): range of an object's side as a fraction of the image's shorter side
            (log-uniform).
        min_visible (`float`): every object keeps at least this fraction of its pixels visible.
        noise (`float`): standard deviation of the pixel noise (0..255 scale).

    Returns:
        `datasets.Dataset` with `image_id` (= index), `image` (PNG), `file_name`, `width`, `height` and `objects`
        (`id`, `area`, `bbox` COCO xywh absolute, `category` a `ClassLabel` named by `shapes`, `iscrowd` = 0).
    """
    if not isinstance(num_images, int) or num_images < 0:
        raise ValueError(f"num_images must be a non-negative integer, got {num_images!r}")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes or len(set(shapes)) != len(shapes):
        raise ValueError(f"shapes must be distinct names from {SHAPES}, got {tuple(shapes)!r}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects} and {max_objects}")
    if not 0 < object_size[0] <= object_size[1] <= 1:
        raise ValueError(f"object_size must be (low, high) with 0 < low <= high <= 1, got {object_size!r}")
    if isinstance(image_size, int):
        size_range = (image_size, image_size)
    else:
        size_range = tuple(image_size)
    if len(size_range) != 2 or size_range[0] < 16 or size_range[0] > size_range[1]:
        raise ValueError(f"image_size must be an int >= 16 or (min, max) with 16 <= min <= max, got {image_size!r}")

    rows = {"image_id": [], "image": [], "file_name": [], "width": [], "height": [], "objects": []}
    next_id = 1
    for index in range(num_images):
        rng = np.random.default_rng((seed, index))
        height, width = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        count = int(rng.integers(min_objects, max_objects + 1))
        image, objects = render_shapes_image(rng, height, width, shapes, count, object_size, min_visible, noise)
        n = len(objects["bbox"])
        objects["id"] = list(range(next_id, next_id + n))
        objects["iscrowd"] = [0] * n
        next_id += n
        rows["image_id"].append(index)
        rows["image"].append(image)
        rows["file_name"].append(f"{index:06d}.png")
        rows["width"].append(width)
        rows["height"].append(height)
        rows["objects"].append(objects)
    return datasets.Dataset.from_dict(rows, features=detection_features(list(shapes)))
