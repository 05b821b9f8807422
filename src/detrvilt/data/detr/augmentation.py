"""DETR's training augmentations, on `tv_tensors.Image` and `tv_tensors.BoundingBoxes` with torchvision.transforms.v2.

The recipe of the paper (Carion et al., 2020, section 4 and appendix A.4) as facebookresearch/detr implements it
(``datasets/coco.py: make_coco_transforms``): horizontal flip with probability 0.5; then, with equal probability,
either a multi-scale resize (shortest side drawn from 480, 512, ..., 800, longest at most 1333), or a resize of the
shortest side to 400, 500 or 600, a random crop whose width and height are drawn from [384, 600] (at a random
place), and the multi-scale resize. Validation uses the image processor's fixed resize instead.

torchvision moves the boxes (flip, resize and crop kernels of ``torchvision.transforms.v2.functional``, which also
clamp boxes to the crop); this file only draws the random parameters, applies the size rule shared with the image
processor (``get_resize_size``), and removes, and counts in ``target["dropped"]["cropped"]``, the boxes that a crop
leaves without area.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ...modeling.detr.image_processing_detr import get_resize_size

PAPER_SCALES = tuple(range(480, 801, 32))
PAPER_MAX_SIZE = 1333
PAPER_CROP_RESIZE_SCALES = (400, 500, 600)
PAPER_CROP_SIZE = (384, 600)


def _check_sizes(values, name: str) -> tuple[int, ...]:
    values = tuple(values)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {values!r}")
    return values


class DetrTrainAugmentation:
    """The paper's training augmentation for one image and its target.

    Args:
        scales (`Sequence[int]`, defaults to 480, 512, ..., 800): shortest-side sizes of the multi-scale resize.
        max_size (`int`, *optional*, defaults to 1333): limit of the longest side in the multi-scale resize.
        crop_resize_scales (`Sequence[int]`, defaults to (400, 500, 600)): shortest-side sizes before the crop.
        crop_size (`tuple[int, int]`, defaults to (384, 600)): range of the crop's width and height (each drawn
            independently, and never larger than the image).
        flip_prob (`float`, defaults to 0.5): probability of the horizontal flip.
        crop_prob (`float`, defaults to 0.5): probability of the resize-crop branch instead of the plain resize.
        generator (`torch.Generator`, *optional*): source of randomness, for reproducible draws in one process. The
            default, torch's global generator, is what DataLoader seeds differently in each worker; a generator given
            here is copied into every worker, which would then all draw the same augmentations. For training, pass a
            generator per call instead (`__call__(..., generator=...)`): [`SeededDetectionDataset`] seeds one from
            (seed, epoch, example index), so that a resumed run draws exactly what an uninterrupted one draws.

    Use [`scaled`] for images much smaller than COCO's (e.g. the synthetic shapes).
    """

    def __init__(
        self,
        scales: Sequence[int] = PAPER_SCALES,
        max_size: int | None = PAPER_MAX_SIZE,
        crop_resize_scales: Sequence[int] = PAPER_CROP_RESIZE_SCALES,
        crop_size: tuple[int, int] = PAPER_CROP_SIZE,
        flip_prob: float = 0.5,
        crop_prob: float = 0.5,
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
        generator: torch.Generator | None = None,
    ):
        self.scales = _check_sizes(scales, "scales")
        self.crop_resize_scales = _check_sizes(crop_resize_scales, "crop_resize_scales")
        self.crop_size = _check_sizes(crop_size, "crop_size")
        if len(self.crop_size) != 2 or self.crop_size[0] > self.crop_size[1]:
            raise ValueError(f"crop_size must be (min, max) with min <= max, got {crop_size!r}")
        if max_size is not None and (not isinstance(max_size, int) or max_size < max(self.scales)):
            raise ValueError(f"max_size must be None or an integer >= max(scales)={max(self.scales)}, got {max_size!r}")
        for name, p in (("flip_prob", flip_prob), ("crop_prob", crop_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p!r}")
        self.max_size = max_size
        self.flip_prob = flip_prob
        self.crop_prob = crop_prob
        self.interpolation = interpolation
        self.generator = generator

    @classmethod
    def scaled(cls, shortest_edge: int, longest_edge: int | None = None, **kwargs) -> DetrTrainAugmentation:
        """The paper's recipe with every size multiplied by `shortest_edge / 800` (so 800 -> `shortest_edge`).

        E.g. `scaled(128)` draws shortest sides from 77..128 and crops of 61..96 pixels; `longest_edge` defaults to
        the paper's 1333 scaled the same way.
        """
        factor = shortest_edge / 800

        def scale(values):
            return tuple(sorted({max(1, round(v * factor)) for v in values}))

        crop_low, crop_high = (max(1, round(v * factor)) for v in PAPER_CROP_SIZE)
        if longest_edge is None:
            longest_edge = round(PAPER_MAX_SIZE * factor)
        return cls(scales=scale(PAPER_SCALES), max_size=longest_edge,
                   crop_resize_scales=scale(PAPER_CROP_RESIZE_SCALES), crop_size=(crop_low, crop_high), **kwargs)

    @staticmethod
    def _random(generator: torch.Generator | None) -> float:
        return float(torch.rand((), generator=generator))

    @staticmethod
    def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
        """Uniform integer in [low, high] (both included)."""
        return int(torch.randint(low, high + 1, (), generator=generator))

    def _choice(self, values: Sequence[int], generator: torch.Generator | None) -> int:
        return values[self._randint(0, len(values) - 1, generator)]

    def _resize(self, image, target, shortest_edge: int, longest_edge: int | None):
        height, width = image.shape[-2:]
        size = list(get_resize_size(height, width, shortest_edge, longest_edge))
        if tuple(size) == (height, width):
            return image, target
        image = F.resize(image, size, interpolation=self.interpolation, antialias=True)
        target["boxes"] = F.resize(target["boxes"], size)
        target["area"] = target["area"] * (size[0] * size[1] / (height * width))
        return image, target

    def _crop(self, image, target, generator: torch.Generator | None):
        height, width = image.shape[-2:]
        low, high = self.crop_size
        crop_w = self._randint(min(low, width), min(width, high), generator)
        crop_h = self._randint(min(low, height), min(height, high), generator)
        top, left = self._randint(0, height - crop_h, generator), self._randint(0, width - crop_w, generator)
        image = F.crop(image, top, left, crop_h, crop_w)
        boxes = F.crop(target["boxes"], top, left, crop_h, crop_w)  # translated and clamped by torchvision
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        plain = boxes.as_subclass(torch.Tensor)
        for key in ("class_labels", "iscrowd"):
            target[key] = target[key][keep]
        # As in the official code, the area of a cropped box is its clipped box area.
        target["area"] = ((plain[:, 2] - plain[:, 0]) * (plain[:, 3] - plain[:, 1]))[keep]
        target["boxes"] = tv_tensors.wrap(boxes[keep], like=boxes)
        target["dropped"] = dict(target["dropped"])
        target["dropped"]["cropped"] = target["dropped"].get("cropped", 0) + int((~keep).sum())
        return image, target

    def __call__(self, image: torch.Tensor, target: dict, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, dict]:
        """
        Args:
            image (`torch.Tensor` or `tv_tensors.Image` of shape `(C, H, W)`, uint8 or float): the image.
            target (`dict`): as returned by `prepare_detection_annotation`: `boxes` (`tv_tensors.BoundingBoxes`
                `(n, 4)`, XYXY, absolute, `canvas_size` = the image's `(H, W)`), `class_labels` `(n,)`, `area` `(n,)`,
                `iscrowd` `(n,)`, `dropped` (`dict[str, int]`) and any other entries (kept as they are).
            generator (`torch.Generator`, *optional*): the draws of this call (default: the one given at
                construction, else torch's global generator).

        Returns:
            The augmented image (same dtype) and a new target: boxes moved with the pixels (their `canvas_size` is the
            new image size), boxes left without area by the crop removed with their labels, and
            `dropped["cropped"]` increased by their number.
        """
        boxes = target.get("boxes")
        if not isinstance(boxes, tv_tensors.BoundingBoxes) or boxes.format != tv_tensors.BoundingBoxFormat.XYXY:
            raise TypeError(
                f"target['boxes'] must be tv_tensors.BoundingBoxes in XYXY format, got {type(boxes).__name__}"
                + (f" in {boxes.format.name}" if isinstance(boxes, tv_tensors.BoundingBoxes) else "")
            )
        if tuple(boxes.canvas_size) != tuple(image.shape[-2:]):
            raise ValueError(
                f"target['boxes'].canvas_size {tuple(boxes.canvas_size)} must be the image size "
                f"{tuple(image.shape[-2:])}"
            )
        target = dict(target)
        generator = generator if generator is not None else self.generator
        if self._random(generator) < self.flip_prob:
            image = F.horizontal_flip(image)
            target["boxes"] = F.horizontal_flip(target["boxes"])
        if self._random(generator) < self.crop_prob:
            image, target = self._resize(image, target, self._choice(self.crop_resize_scales, generator), None)
            image, target = self._crop(image, target, generator)
        image, target = self._resize(image, target, self._choice(self.scales, generator), self.max_size)
        return image, target
