"""Synthetic panoptic set: the shapes of `detrvilt.data.detr.shapes` as things, on textured background regions as stuff.

Each image is split by a wavy line into two background regions of two different stuff classes, each with its own
colour and texture (`"sky"`: a smooth light gradient, `"grass"`: green speckle, `"wall"`: brownish stripes); the shapes
(circle, square, triangle, cross; drawn by the detection set's `_shape_mask`, coloured from its `PALETTE`) are pasted
on top, each keeping at least `min_visible` of its pixels. Image `i` is drawn from ``numpy.random.default_rng((seed,
i))``, so a set is reproducible. Class ids: things first (`0..len(shapes)-1`), then stuff.

Every example is in COCO panoptic form, ready for ``DetrImageProcessor(images, annotations=...)``: ``{"image": PIL,
"segmentation": (H, W) int64 segment ids (0 = void, unused here), "segments_info": [{"id", "category_id", "iscrowd",
"area", "isthing"}], "image_id"}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .shapes import PALETTE, SHAPES, _shape_mask

STUFF = ("sky", "grass", "wall")


def panoptic_categories(shapes: Sequence[str] = SHAPES[:3], stuff: Sequence[str] = STUFF) -> list[dict]:
    """`[{"id", "name", "isthing"}]`: the things (shapes) first, then the stuff classes."""
    things = [{"id": i, "name": name, "isthing": 1} for i, name in enumerate(shapes)]
    return things + [{"id": len(shapes) + j, "name": name, "isthing": 0} for j, name in enumerate(stuff)]


def _stuff_texture(name: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An `(H, W, 3)` float texture of one stuff class."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if name == "sky":
        base = np.array([150, 190, 235], dtype=np.float32) + rng.normal(0, 10, 3).astype(np.float32)
        return base + (-30 * ys / height)[..., None]
    if name == "grass":
        base = np.array([60, 140, 50], dtype=np.float32) + rng.normal(0, 10, 3).astype(np.float32)
        return base + rng.normal(0, 25, (height, width, 1)).astype(np.float32)
    if name == "wall":
        base = np.array([150, 110, 80], dtype=np.float32) + rng.normal(0, 10, 3).astype(np.float32)
        period = rng.uniform(5, 9)
        return base + (25 * np.sign(np.sin(2 * math.pi * ys / period)))[..., None]
    raise ValueError(f"unknown stuff class {name!r}; known: {STUFF}")


def render_panoptic_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    shapes: Sequence[str] = SHAPES[:3],
    stuff: Sequence[str] = STUFF,
    num_objects: int = 2,
    object_size: tuple[float, float] = (0.2, 0.5),
    min_visible: float = 0.7,
    noise: float = 6.0,
    max_tries: int = 30,
) -> tuple[Image.Image, np.ndarray, list[dict]]:
    """One synthetic panoptic image.

    Returns:
        The RGB image, the `(H, W)` int64 segment-id map (ids from 1) and its `segments_info` (see the module
        docstring). Fewer than `num_objects` shapes are placed when `max_tries` draws cannot keep them visible.
    """
    # Two stuff regions split by a wavy, tilted line.
    top, bottom = rng.choice(len(stuff), size=2, replace=False)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    level = height * rng.uniform(0.3, 0.7) + rng.uniform(-0.2, 0.2) * (xs - width / 2)
    level = level + height * 0.06 * np.sin(2 * math.pi * xs / (width * rng.uniform(0.5, 1.5)) + rng.uniform(0, 6))
    is_top = ys < level
    image = np.where(is_top[..., None], _stuff_texture(stuff[top], rng, height, width),
                     _stuff_texture(stuff[bottom], rng, height, width))
    owner = np.where(is_top, -1, -2).astype(np.int64)  # -1 / -2: the stuff regions, k >= 0: shape k

    full_areas, classes = [], []
    side = min(height, width)
    for _ in range(num_objects):
        for _ in range(max_tries):
            size = side * math.exp(rng.uniform(math.log(object_size[0]), math.log(object_size[1])))
            w = int(min(width, max(6, round(size))))
            h = int(min(height, max(6, round(size * math.exp(rng.uniform(-0.2, 0.2))))))
            x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            label = int(rng.integers(len(shapes)))
            mask = _shape_mask(shapes[label], height, width, (x0, y0, x0 + w, y0 + h), rng)
            candidate = owner.copy()
            candidate[mask] = len(classes)
            if mask.any() and all(np.count_nonzero(candidate == k) >= min_visible * full_areas[k]
                                  for k in range(len(classes))):
                break
        else:
            continue
        colour = PALETTE[int(rng.integers(len(PALETTE)))]
        image[mask] = np.asarray(colour, dtype=np.float32) + rng.normal(0, 8, 3).astype(np.float32)
        owner = candidate
        full_areas.append(np.count_nonzero(mask))
        classes.append(label)

    image += rng.normal(0, noise, image.shape).astype(np.float32)
    segmentation = np.zeros((height, width), dtype=np.int64)
    segments = []
    regions = [(k, classes[k], 1) for k in range(len(classes))]
    regions += [(-1, len(shapes) + int(top), 0), (-2, len(shapes) + int(bottom), 0)]
    for key, category, is_thing in regions:
        region = owner == key
        area = int(np.count_nonzero(region))
        if area == 0:
            continue
        segment_id = len(segments) + 1
        segmentation[region] = segment_id
        segments.append({"id": segment_id, "category_id": int(category), "iscrowd": 0, "area": area,
                         "isthing": is_thing})
    pil = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))
    return pil, segmentation, segments


def make_panoptic_shapes(
    num_images: int = 100,
    seed: int = 0,
    image_size: int = 64,
    shapes: Sequence[str] = SHAPES[:3],
    stuff: Sequence[str] = STUFF,
    max_objects: int = 2,
    min_objects: int = 1,
    object_size: tuple[float, float] = (0.2, 0.5),
    min_visible: float = 0.7,
) -> list[dict]:
    """The synthetic panoptic set, a list of examples in COCO panoptic form (see the module docstring).

    Args:
        num_images (`int`): number of images.
        seed (`int`): image `i` comes from `numpy.random.default_rng((seed, i))`; use other seeds for other splits.
        image_size (`int`): side of the square images (>= 16).
        shapes, stuff (`Sequence[str]`): thing classes (from `SHAPES`) and stuff classes (from `STUFF`, at least 2).
        max_objects, min_objects (`int`): the number of shapes per image is uniform in [min_objects, max_objects].
        object_size (`tuple[float, float]`): range of a shape's side as a fraction of the image side (log-uniform).
        min_visible (`float`): every shape keeps at least this fraction of its pixels visible.
    """
    if not isinstance(num_images, int) or num_images < 0:
        raise ValueError(f"num_images must be a non-negative integer, got {num_images!r}")
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
    if [s for s in shapes if s not in SHAPES] or not shapes or len(set(shapes)) != len(shapes):
        raise ValueError(f"shapes must be distinct names from {SHAPES}, got {tuple(shapes)!r}")
    if [s for s in stuff if s not in STUFF] or len(set(stuff)) != len(stuff) or len(stuff) < 2:
        raise ValueError(f"stuff must be at least two distinct names from {STUFF}, got {tuple(stuff)!r}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects} and {max_objects}")
    examples = []
    for index in range(num_images):
        rng = np.random.default_rng((seed, index))
        count = int(rng.integers(min_objects, max_objects + 1))
        image, segmentation, segments = render_panoptic_image(
            rng, image_size, image_size, shapes, stuff, count, object_size, min_visible
        )
        examples.append({"image": image, "segmentation": segmentation, "segments_info": segments, "image_id": index})
    return examples
