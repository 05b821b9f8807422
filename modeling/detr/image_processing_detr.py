"""DETR's image processor: images and COCO-style annotations in; `pixel_values`, `pixel_mask` and labels out.

Carion et al., 2020, "End-to-End Object Detection with Transformers". The evaluation preprocessing of the paper and
of facebookresearch/detr (``datasets/coco.py``, ``datasets/transforms.py``): resize so that the shortest side is
800 and the longest at most 1333, rescale to [0, 1], ImageNet normalization, zero padding bottom/right to the
largest image of the batch with a pixel mask (1 on real pixels). Geometry runs through
``torchvision.transforms.v2.functional`` on the uint8 image and ``tv_tensors.BoundingBoxes``, so torchvision moves
the boxes with the pixels (the training augmentations in ``detrvilt.data`` use the same kernels).

Relation to transformers' ``DetrImageProcessor`` (its torchvision backend, the default in transformers 5):

- ``pixel_values`` and ``pixel_mask`` are the same: the same output-size rule (the long side is derived from the
  exact, unrounded scale when ``longest_edge`` limits it), the same antialiased bilinear kernel applied to the uint8
  image, the same normalization (equal within 1e-5 in fp32: the affine map is evaluated in another order).
  transformers' PIL backend (``DetrImageProcessorPil``) resizes with PIL instead and differs from both by at most one
  grey level (1 / 255 / std, about 0.0175) on a fraction of the pixels.
- Label boxes are normalized (cx, cy, w, h) by the **unpadded** resized image, as in the paper, so an image's targets
  do not depend on the other images of its batch. transformers divides them by the padded size instead. For an image
  resized to ``(h, w)`` and padded to ``(H, W)``::

      transformers_boxes = ours * [w / W, h / H, w / W, h / H]

  and the two are equal when the image is not padded (``tests/test_detr_image_processor.py`` checks both). For the
  same reason ``labels[i]["size"]`` is the unpadded resized ``(h, w)``, where transformers reports the padded size.
- Every input becomes 3-channel RGB (grayscale repeated; alpha composited on white; palette, CMYK, 16-bit decoded),
  PIL images are turned upright by their EXIF orientation, and float inputs are taken as already in [0, 1].
- Boxes removed on the way (crowd, degenerate, non-finite coordinates, entirely outside the image) are counted per
  image in ``labels[i]["dropped"]`` instead of disappearing silently; ``area`` falls back to the clipped box area when
  an annotation has none.
- ``post_process_object_detection`` also takes ``top_k`` and returns detections sorted by score.

This file travels to the Hub with the model, so it imports only torch, torchvision, numpy, PIL and transformers.
"""

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from transformers import BaseImageProcessor, BatchFeature

from .image_processing_detr_panoptic import DetrSegmentationPostProcessingMixin, prepare_panoptic_annotation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = {"shortest_edge": 800, "longest_edge": 1333}
# Keys of the per-image `dropped` counts; "cropped" is filled by the training augmentations.
DROP_REASONS = ("crowd", "degenerate", "nonfinite", "outside", "cropped")

# PIL's resampling codes (what transformers stores in `resample`) to torchvision's modes.
_RESAMPLE = {0: InterpolationMode.NEAREST, 2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC}
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class DetrImageProcessorKwargs(TypedDict, total=False):
    """The settings of [`DetrviltDetrImageProcessor`] (what `from_pretrained(..., **kwargs)` may override)."""

    do_resize: bool
    size: dict
    resample: int
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: list
    image_std: list
    do_pad: bool
    pad_size: dict
    remove_crowd: bool
    num_labels: int


def get_resize_size(height: int, width: int, shortest_edge: int, longest_edge: int | None = None) -> tuple[int, int]:
    """Output `(height, width)` when the shortest side goes to `shortest_edge` and the longest stays <= `longest_edge`.

    The rule of facebookresearch/detr's ``get_size_with_aspect_ratio`` as transformers computes it: when the long
    side would exceed `longest_edge`, the short side becomes ``round(longest_edge * short / long)`` and the long side is
    derived from that unrounded value (so it is `longest_edge` or one less); sides are truncated, not rounded. An
    image whose short side already has the target size keeps its size.
    """
    short, long = float(min(height, width)), float(max(height, width))
    target, unrounded = shortest_edge, None
    if longest_edge is not None and long / short * target > longest_edge:
        unrounded = longest_edge * short / long
        target = int(round(unrounded))
    if min(height, width) == target:
        return height, width
    scale_base = unrounded if unrounded is not None else target
    if width < height:
        return int(scale_base * height / width), target
    return target, int(scale_base * width / height)


def check_size(size, name: str = "size") -> dict:
    """Validate a size dict: `{"shortest_edge": int, "longest_edge": int | None}` or `{"height": int, "width": int}`."""
    if not isinstance(size, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(size).__name__}: {size!r}")
    if "shortest_edge" in size:
        keys = {"shortest_edge", "longest_edge"}
    elif "height" in size and "width" in size:
        keys = {"height", "width"}
    else:
        raise ValueError(
            f"{name} must be {{'shortest_edge': int, 'longest_edge': int}} or {{'height': int, 'width': int}}, "
            f"got {size!r}"
        )
    if set(size) - keys:
        raise ValueError(f"{name} has unexpected keys {sorted(set(size) - keys)}: {size!r}")
    for key in keys:
        value = size.get(key)
        if key == "longest_edge" and value is None:
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}[{key!r}] must be a positive integer, got {value!r}")
    return {key: (None if size.get(key) is None else int(size[key])) for key in sorted(keys)}


def size_dict(size, max_size: int | None = 1333) -> dict:
    """A checked size dict from a dict or an `int` (the shortest edge, with `max_size` as the longest edge)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = {"shortest_edge": int(size), "longest_edge": max_size}
    return check_size(size)


def output_size(height: int, width: int, size: dict) -> tuple[int, int]:
    """The resized `(height, width)` of an image under a checked size dict (see [`check_size`])."""
    if "shortest_edge" in size:
        return get_resize_size(height, width, size["shortest_edge"], size.get("longest_edge"))
    return size["height"], size["width"]


# ----------------------------------------------------------------------------------------------------------------
# Images


def _describe(image, index) -> str:
    name = f"images[{index}]" if index is not None else "image"
    filename = getattr(image, "filename", None) or (image if isinstance(image, str) else None)
    if filename is None and hasattr(image, "__fspath__"):
        filename = image.__fspath__()
    return f"{name} (file {filename!r})" if filename else name


def open_image(path, index=None) -> Image.Image:
    """Open and fully decode an image file; a missing, corrupt or truncated file raises `ValueError` naming it."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{_describe(path, index)}: cannot decode the image file: {error}") from error
    return image


def _pil_to_array(image: Image.Image, index) -> np.ndarray:
    """An upright RGB (H, W, 3) uint8 array, or a (H, W, 3) float32 array in [0, 1] for 16-bit images."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
        if orientation is not None and orientation != 1:
            image = ImageOps.exif_transpose(image)
        if image.mode == "RGB":
            return np.array(image)
        if image.mode in _SIXTEEN_BIT_MODES:
            # 16-bit grayscale (mode "I" is how older Pillow versions open it): keep the precision as floats.
            gray = np.asarray(image).astype(np.float32).clip(0, 65535) / 65535.0
            return np.repeat(gray[..., None], 3, axis=-1)
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
        return np.array(image.convert("RGB"))  # L, 1, P, CMYK, YCbCr, F, ...
    except (OSError, SyntaxError, ValueError) as error:  # lazily decoded files fail here when truncated
        raise ValueError(f"{_describe(image, index)}: cannot decode the image ({image.mode}): {error}") from error


def _composite_on_white(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """`rgb` (3, H, W) and `alpha` (1, H, W), both uint8 or both float in [0, 1]: blend over a white background."""
    if rgb.dtype == torch.uint8:
        a = alpha.float() / 255.0
        return (rgb.float() * a + 255.0 * (1.0 - a)).round_().to(torch.uint8)
    return rgb * alpha + (1.0 - alpha)


def to_image_tensor(image, index: int | None = None) -> torch.Tensor:
    """Any supported image as an RGB `torch.Tensor` of shape `(3, height, width)`.

    Args:
        image: a PIL image (turned upright by its EXIF orientation; any mode: grayscale, RGBA and palettes with
            transparency are composited on white, 16-bit grayscale keeps its precision, CMYK is converted), a file path,
            a `numpy.ndarray` (`(H, W)`, `(H, W, C)` or `(C, H, W)`) or a `torch.Tensor` (`(H, W)`, `(C, H, W)` or
            `(H, W, C)`), with C in 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). Arrays and tensors are read as
            channels-last when their last dimension could be channels (numpy's convention) and channels-first
            otherwise; for tensors channels-first is tried first (torch's convention).
        index (`int`, *optional*): position in the batch, quoted in errors.

    Returns:
        `torch.uint8` for 8-bit inputs (values 0..255), `torch.float32` in [0, 1] for 16-bit and floating-point inputs.
        The tensor may be a channels-last view (`permute`), which torchvision's uint8 resize reads fastest.

    Raises:
        `ValueError` naming the image (and its file) when it cannot be decoded, has no pixels, an unsupported dtype
        or channel count, or floating-point values outside [0, 1]. `TypeError` for other input types.
    """
    name = _describe(image, index)
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        image = open_image(image, index)
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{name} has no pixels: size (width, height) = {image.size}")
        array = _pil_to_array(image, index)
        return torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W), a view of the (H, W, 3) array
    if isinstance(image, np.ndarray):
        from_numpy = True
        if image.dtype == np.uint16:
            tensor = torch.from_numpy(image.astype(np.float32) / 65535.0)
        else:
            array = np.ascontiguousarray(image)
            tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    elif isinstance(image, torch.Tensor):
        from_numpy = False
        tensor = image.detach().cpu()
        if tensor.dtype == torch.uint16:
            tensor = tensor.float() / 65535.0
    else:
        raise TypeError(
            f"{name} must be a PIL image, a file path, a numpy array or a torch tensor, got {type(image).__name__}"
        )
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        raise ValueError(f"{name} must be uint8, uint16 or floating point, got dtype {tensor.dtype}")
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3:
        channels_first, channels_last = tensor.shape[0] <= 4, tensor.shape[-1] <= 4
        if not (channels_first or channels_last):
            raise ValueError(f"{name} must have 1, 2, 3 or 4 channels first or last, got shape {tuple(image.shape)}")
        if channels_last and (from_numpy or not channels_first):
            tensor = tensor.permute(2, 0, 1)
    else:
        raise ValueError(f"{name} must be (H, W), (H, W, C) or (C, H, W), got shape {tuple(image.shape)}")
    if tensor.shape[-2] == 0 or tensor.shape[-1] == 0 or tensor.shape[0] == 0:
        raise ValueError(f"{name} has no pixels: shape {tuple(image.shape)}")
    if tensor.is_floating_point():
        tensor = tensor.float()
        low, high = tensor.min().item(), tensor.max().item()
        if not (0.0 <= low and high <= 1.0):  # also catches NaN
            raise ValueError(
                f"{name} is a floating-point image with values in [{low}, {high}]; floating-point images must be in "
                "[0, 1] (pass uint8 for 0..255)"
            )
    channels = tensor.shape[0]
    if channels == 1:
        return tensor.expand(3, -1, -1)
    if channels == 2:
        return _composite_on_white(tensor[:1].expand(3, -1, -1), tensor[1:])
    if channels == 4:
        return _composite_on_white(tensor[:3], tensor[3:])
    return tensor


# ----------------------------------------------------------------------------------------------------------------
# Annotations


def empty_drop_counts() -> dict[str, int]:
    """`{reason: 0}` for every reason in `DROP_REASONS`."""
    return dict.fromkeys(DROP_REASONS, 0)


def _as_box_array(bboxes, where: str) -> np.ndarray:
    """(n, 4) float64 array of [x, y, w, h]; a box of the wrong length or type raises `ValueError` naming it."""
    try:
        array = np.asarray(bboxes, dtype=np.float64)
        if (array.ndim == 2 and array.shape[1] == 4) or array.size == 0:
            return array.reshape(-1, 4)
    except (TypeError, ValueError):
        pass
    for j, box in enumerate(bboxes):
        try:
            ok = len(box) == 4 and not any(isinstance(v, (str, bytes)) for v in box) and bool([float(v) for v in box])
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{where.format(j=j)} must have 4 numbers [x, y, width, height], got {box!r}")
    raise ValueError(f"{where.format(j='*')} must be a list of [x, y, width, height] boxes, got {bboxes!r}")


def _as_category_array(categories, where: str, num_labels: int | None) -> np.ndarray:
    """(n,) int64 class ids; non-integers, negative ids and ids >= `num_labels` (when given) raise `ValueError`."""
    for j, value in enumerate(categories):
        integral = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if not integral and isinstance(value, (float, np.floating)) and float(value).is_integer():
            integral = True
        if not integral:
            raise ValueError(f"{where.format(j=j)} must be an integer class id, got {value!r}")
        if value < 0 or (num_labels is not None and value >= num_labels):
            known = f"[0, num_labels={num_labels})" if num_labels is not None else ">= 0"
            raise ValueError(f"{where.format(j=j)} is an unknown category id {value!r} (expected {known})")
    return np.asarray(categories, dtype=np.int64).reshape(-1)


def prepare_detection_annotation(
    annotation: Mapping,
    image_size: tuple[int, int],
    index: int = 0,
    remove_crowd: bool = True,
    num_labels: int | None = None,
) -> dict[str, Any]:
    """Validate one image's annotations and turn them into a target with absolute xyxy boxes in that image's pixels.

    Args:
        annotation (`dict`): either COCO detection format, ``{"image_id": int, "annotations": [{"bbox": [x, y, w, h],
            "category_id": int, "iscrowd": 0 or 1 (optional), "area": float (optional)}, ...]}``, or the Hub
            ``objects`` format, ``{"bbox": [[x, y, w, h], ...], "category": [...], "area": [...] (optional),
            "iscrowd": [...] (optional), "image_id": int (optional)}``. Boxes are COCO xywh in absolute pixels of the
            image as given (after its EXIF orientation).
        image_size (`tuple[int, int]`): `(height, width)` of that image.
        index (`int`): position in the batch, quoted in errors.
        remove_crowd (`bool`): drop `iscrowd=1` boxes (DETR trains and evaluates without them).
        num_labels (`int`, *optional*): when given, category ids must be in `[0, num_labels)`.

    Returns:
        `dict` with `image_id` (`torch.LongTensor` `(1,)`, -1 when not given), `class_labels` (`torch.LongTensor`
        `(n,)`), `boxes` (`tv_tensors.BoundingBoxes` `(n, 4)`, XYXY, absolute, clipped to the image), `area`
        (`torch.FloatTensor` `(n,)`, the annotation's area or else the clipped box area), `iscrowd`
        (`torch.LongTensor` `(n,)`), `orig_size` (`torch.LongTensor` `[height, width]`) and `dropped` (`dict[str, int]`
        counting the removed boxes by reason: `crowd`, `degenerate` (width or height <= 0), `nonfinite` (NaN or inf
        coordinates), `outside` (nothing left after clipping to the image); `cropped` is 0 here).

    Raises:
        `TypeError`/`ValueError` naming the annotation for a wrong structure, a bbox that is not 4 numbers, a category
        that is not an integer, negative or (with `num_labels`) too large.
    """
    name = f"annotations[{index}]"
    if not isinstance(annotation, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(annotation).__name__}")
    if "annotations" in annotation:
        objects = annotation["annotations"]
        if not isinstance(objects, Sequence) or isinstance(objects, (str, bytes)):
            raise TypeError(f"{name}['annotations'] must be a list of dicts, got {type(objects).__name__}")
        for j, obj in enumerate(objects):
            if not isinstance(obj, Mapping) or "bbox" not in obj or "category_id" not in obj:
                raise ValueError(
                    f"{name}['annotations'][{j}] must be a dict with 'bbox' and 'category_id', got {obj!r}"
                )
        bboxes = [obj["bbox"] for obj in objects]
        categories = [obj["category_id"] for obj in objects]
        crowd = [obj.get("iscrowd", 0) for obj in objects]
        areas = [obj.get("area") for obj in objects]
        box_where = name + "['annotations'][{j}]['bbox']"
        category_where = name + "['annotations'][{j}]['category_id']"
    elif "bbox" in annotation and "category" in annotation:
        bboxes, categories = annotation["bbox"], list(annotation["category"])
        count = len(bboxes)
        crowd = [0] * count if annotation.get("iscrowd") is None else list(annotation["iscrowd"])
        areas = [None] * count if annotation.get("area") is None else list(annotation["area"])
        for key, values in (("category", categories), ("iscrowd", crowd), ("area", areas)):
            if len(values) != count:
                raise ValueError(f"{name}[{key!r}] has {len(values)} entries for {count} boxes")
        box_where = name + "['bbox'][{j}]"
        category_where = name + "['category'][{j}]"
    else:
        keys = sorted(annotation) if all(isinstance(k, str) for k in annotation) else list(annotation)
        raise ValueError(
            f"{name} must be COCO detection format {{'image_id', 'annotations': [...]}} or Hub objects format "
            f"{{'bbox': [[x, y, w, h], ...], 'category': [...]}}, got keys {keys}"
        )

    height, width = image_size
    xywh = _as_box_array(bboxes, box_where)
    classes = _as_category_array(categories, category_where, num_labels)
    is_crowd = np.asarray(crowd, dtype=np.int64).reshape(-1)

    finite = np.isfinite(xywh).all(axis=1)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    crowd_drop = finite & (is_crowd != 0) if remove_crowd else np.zeros(len(xywh), dtype=bool)
    candidate = finite & ~crowd_drop
    degenerate = candidate & ((xywh[:, 2] <= 0) | (xywh[:, 3] <= 0))
    with np.errstate(invalid="ignore"):
        clipped = np.stack([xyxy[:, 0].clip(0, width), xyxy[:, 1].clip(0, height),
                            xyxy[:, 2].clip(0, width), xyxy[:, 3].clip(0, height)], axis=1)
    outside = candidate & ~degenerate & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    keep = candidate & ~degenerate & ~outside

    clipped_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    area = np.array([clipped_area[j] if a is None else a for j, a in enumerate(areas)], dtype=np.float64)

    image_id = annotation.get("image_id", -1)
    boxes = torch.as_tensor(clipped[keep], dtype=torch.float32).reshape(-1, 4)
    return {
        "image_id": torch.as_tensor([-1 if image_id is None else int(image_id)], dtype=torch.int64),
        "class_labels": torch.as_tensor(classes[keep], dtype=torch.int64),
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
        "area": torch.as_tensor(area[keep], dtype=torch.float32),
        "iscrowd": torch.as_tensor(is_crowd[keep], dtype=torch.int64),
        "orig_size": torch.as_tensor([height, width], dtype=torch.int64),
        "dropped": {
            "crowd": int(crowd_drop.sum()),
            "degenerate": int(degenerate.sum()),
            "nonfinite": int((~finite).sum()),
            "outside": int(outside.sum()),
            "cropped": 0,
        },
    }


def resize_with_target(
    image: torch.Tensor,
    target: dict | None,
    size: tuple[int, int],
    interpolation: InterpolationMode = InterpolationMode.BILINEAR,
) -> tuple[torch.Tensor, dict | None]:
    """Resize `image` `(C, H, W)` to `size` `(h, w)` (antialiased) and move the target's XYXY boxes and areas with it.

    The boxes are resized by torchvision (`tv_tensors.BoundingBoxes`); `area` is scaled by the pixel-area ratio.
    """
    old_height, old_width = image.shape[-2:]
    if (old_height, old_width) == tuple(size):
        return image, target
    image = F.resize(image, list(size), interpolation=interpolation, antialias=True)
    if target is None:
        return image, None
    target = dict(target)
    target["boxes"] = F.resize(target["boxes"], list(size))
    if "masks" in target:  # tv_tensors.Mask: nearest neighbour
        target["masks"] = F.resize(target["masks"], list(size))
    target["area"] = target["area"] * (size[0] * size[1] / (old_height * old_width))
    return image, target


def encode_target(target: dict) -> dict[str, Any]:
    """The model's labels from a target whose `boxes` are `tv_tensors.BoundingBoxes` on the final (unpadded) image.

    Returns the target with `boxes` as a `torch.FloatTensor` `(n, 4)` of (cx, cy, w, h) divided by the image's width
    and height (its `canvas_size`, i.e. the **unpadded** resized image) and `size` (`torch.LongTensor`
    `[height, width]` of that image); the other entries are kept.
    """
    boxes = target["boxes"]
    height, width = boxes.canvas_size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    labels = dict(target)
    labels["boxes"] = box_convert(boxes.as_subclass(torch.Tensor).float(), "xyxy", "cxcywh") / scale
    labels["size"] = torch.as_tensor([height, width], dtype=torch.int64)
    if "masks" in labels:
        labels["masks"] = labels["masks"].as_subclass(torch.Tensor).bool()  # (n, height, width)
    return labels


def pad_images(images: Sequence[torch.Tensor], pad_size: tuple[int, int] | None = None):
    """Pad `(C, h_i, w_i)` float images with zeros at the bottom/right to one `(B, C, H, W)` batch.

    Args:
        images: the images (already normalized).
        pad_size (`tuple[int, int]`, *optional*): `(H, W)`; defaults to the largest height and width of the batch.

    Returns:
        `pixel_values` (`torch.FloatTensor` `(B, C, H, W)`) and `pixel_mask` (`torch.LongTensor` `(B, H, W)`, 1 on real
        pixels).
    """
    if len(images) == 0:
        raise ValueError("pad_images needs at least one image, got an empty list")
    height, width = _padded_size([img.shape[-2:] for img in images], pad_size)
    pixel_values = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    pixel_mask = torch.zeros((len(images), height, width), dtype=torch.int64)
    for i, img in enumerate(images):
        pixel_values[i, :, : img.shape[-2], : img.shape[-1]] = img
        pixel_mask[i, : img.shape[-2], : img.shape[-1]] = 1
    return pixel_values, pixel_mask


def _padded_size(sizes, pad_size) -> tuple[int, int]:
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    if pad_size is None:
        return int(height), int(width)
    if pad_size[0] < height or pad_size[1] < width:
        raise ValueError(
            f"pad_size {tuple(pad_size)} is smaller than the largest image of the batch ({height}, {width})"
        )
    return int(pad_size[0]), int(pad_size[1])


def _get(outputs, key):
    return outputs[key] if isinstance(outputs, Mapping) else getattr(outputs, key)


# ----------------------------------------------------------------------------------------------------------------
# The processor


class DetrviltDetrImageProcessor(DetrSegmentationPostProcessingMixin, BaseImageProcessor):
    r"""Image processor of detrvilt's DETR (exported as `detrvilt.DetrImageProcessor`).

    The class name differs from transformers' `DetrImageProcessor` on purpose: `AutoImageProcessor` resolves a saved
    `preprocessor_config.json` by the class name it records, and the two processors differ in how label boxes are
    normalized; with distinct names neither loads in place of the other.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`): resize each image (see `size`).
        size (`dict`, *optional*, defaults to `{"shortest_edge": 800, "longest_edge": 1333}`): either the shortest
            side and the limit of the longest (`longest_edge` may be `None`), or an exact `{"height", "width"}`. An
            `int` is a shortest edge, with `max_size` (default 1333) as the longest.
        resample (`int`, *optional*, defaults to 2): PIL's code of the resampling filter: 0 nearest, 2 bilinear,
            3 bicubic (always antialiased when downsampling, on the uint8 image).
        do_rescale (`bool`, *optional*, defaults to `True`): multiply 8-bit images by `rescale_factor` (1/255).
            16-bit and floating-point images are already in [0, 1] and are not rescaled.
        do_normalize (`bool`, *optional*, defaults to `True`): subtract `image_mean` and divide by `image_std`
            (ImageNet's by default).
        do_pad (`bool`, *optional*, defaults to `True`): pad bottom/right to the largest image of the batch (or to
            `pad_size`) and return `pixel_mask`. Without padding, `pixel_values` is a list of `(3, h, w)` tensors.
        pad_size (`dict`, *optional*): `{"height", "width"}` to pad every batch to.
        remove_crowd (`bool`, *optional*, defaults to `True`): drop `iscrowd=1` annotations (counted).
        num_labels (`int`, *optional*): when set, annotations with a category id outside `[0, num_labels)` raise
            `ValueError`; without it any non-negative id is accepted (the model's loss checks the range later).
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    valid_kwargs = DetrImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: dict | int | None = None,
        resample: int = 2,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        do_pad: bool = True,
        pad_size: dict | None = None,
        remove_crowd: bool = True,
        num_labels: int | None = None,
        **kwargs,
    ):
        # Settings found in transformers' DETR preprocessor configs, accepted when they mean what we do.
        max_size = kwargs.pop("max_size", 1333)
        do_pad = kwargs.pop("pad_and_return_pixel_mask", do_pad)
        # Each annotation's own keys say whether it is detection or panoptic ("segments_info"), so both are accepted.
        annotation_format = kwargs.pop("format", "coco_detection")
        if str(getattr(annotation_format, "value", annotation_format)) not in ("coco_detection", "coco_panoptic"):
            raise ValueError(f"format must be 'coco_detection' or 'coco_panoptic', got {annotation_format!r}")
        if not kwargs.pop("do_convert_annotations", True):
            raise ValueError("do_convert_annotations=False is not supported: label boxes are always normalized cxcywh")
        super().__init__(**kwargs)
        self.do_resize = bool(do_resize)
        self.size = size_dict(DEFAULT_SIZE if size is None else size, max_size)
        if resample not in _RESAMPLE:
            raise ValueError(
                f"resample must be one of {sorted(_RESAMPLE)} (nearest, bilinear, bicubic), got {resample!r}"
            )
        self.resample = int(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = self._check_channels(image_mean, "image_mean")
        self.image_std = self._check_channels(image_std, "image_std")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        self.do_pad = bool(do_pad)
        self.pad_size = None if pad_size is None else check_size(pad_size, "pad_size")
        if self.pad_size is not None and "height" not in self.pad_size:
            raise ValueError(f"pad_size must be {{'height': int, 'width': int}}, got {pad_size!r}")
        self.remove_crowd = bool(remove_crowd)
        if num_labels is not None and (not isinstance(num_labels, int) or num_labels < 1):
            raise ValueError(f"num_labels must be a positive integer or None, got {num_labels!r}")
        self.num_labels = num_labels

    @staticmethod
    def _check_channels(values, name) -> list[float]:
        values = [float(v) for v in (values if isinstance(values, Sequence) else [values] * 3)]
        if len(values) != 3:
            raise ValueError(f"{name} must have 3 values (RGB), got {values}")
        return values

    def to_dict(self) -> dict[str, Any]:
        """The settings as saved in `preprocessor_config.json` (plus `image_processor_type`)."""
        output = super().to_dict()
        output = {k: v for k, v in output.items() if not k.startswith("_")}
        for key in ("size", "pad_size"):
            if output.get(key) is not None:
                output[key] = dict(output[key])
        return output

    def __call__(self, images, annotations=None, **kwargs) -> BatchFeature:
        """Same as [`preprocess`]."""
        return self.preprocess(images, annotations, **kwargs)

    def _normalize_into(self, out: torch.Tensor, image: torch.Tensor, do_rescale, rescale_factor, do_normalize,
                        mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        # One pass over the output: out = image * multiplier + offset (uint8 is promoted to float by addcmul).
        scale = rescale_factor if (do_rescale and image.dtype == torch.uint8) else 1.0
        if do_normalize:
            multiplier, offset = scale / std, -mean / std
        else:
            multiplier, offset = torch.full_like(std, scale), torch.zeros_like(mean)
        return out.copy_(image).mul_(multiplier.view(-1, 1, 1)).add_(offset.view(-1, 1, 1))

    def normalize_image(self, image: torch.Tensor, **overrides) -> torch.Tensor:
        """Rescale and normalize one `(3, H, W)` image (uint8, or float in [0, 1]) into a new float32 tensor.

        `overrides` may set `do_rescale`, `rescale_factor`, `do_normalize`, `image_mean`, `image_std`.
        """
        settings = self._settings(overrides)
        out = torch.empty(image.shape, dtype=torch.float32)
        return self._normalize_into(out, image, *self._normalization(settings))

    def _normalization(self, settings):
        mean = torch.tensor(self._check_channels(settings["image_mean"], "image_mean"), dtype=torch.float32)
        std = torch.tensor(self._check_channels(settings["image_std"], "image_std"), dtype=torch.float32)
        return settings["do_rescale"], settings["rescale_factor"], settings["do_normalize"], mean, std

    def _settings(self, overrides: dict) -> dict:
        unknown = set(overrides) - set(DetrImageProcessorKwargs.__annotations__)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; known: "
                            f"{sorted(DetrImageProcessorKwargs.__annotations__)}")
        settings = {key: getattr(self, key) for key in DetrImageProcessorKwargs.__annotations__}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("size") is not None:
            settings["size"] = size_dict(overrides["size"])
        if overrides.get("pad_size") is not None:
            settings["pad_size"] = check_size(overrides["pad_size"], "pad_size")
        if settings["resample"] not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {settings['resample']!r}")
        return settings

    def resize(self, image: torch.Tensor, target: dict | None = None, size: dict | None = None,
               resample: int | None = None) -> tuple[torch.Tensor, dict | None]:
        """Resize a `(3, H, W)` image by the size rule (see [`get_resize_size`]) and move its target with it."""
        size = self.size if size is None else size_dict(size)
        new_size = output_size(image.shape[-2], image.shape[-1], size)
        mode = _RESAMPLE[self.resample if resample is None else resample]
        return resize_with_target(image, target, new_size, mode)

    def prepare_annotation(self, annotation: Mapping, image_size: tuple[int, int], index: int = 0,
                           remove_crowd: bool | None = None, num_labels: int | None = None) -> dict[str, Any]:
        """[`prepare_detection_annotation`] with this processor's `remove_crowd` and `num_labels`."""
        return prepare_detection_annotation(
            annotation, image_size, index,
            remove_crowd=self.remove_crowd if remove_crowd is None else remove_crowd,
            num_labels=self.num_labels if num_labels is None else num_labels,
        )

    def preprocess(self, images, annotations=None, return_tensors: str | None = None, masks_path=None,
                   **kwargs) -> BatchFeature:
        r"""Resize, rescale, normalize and pad a batch of images, and turn their annotations into DETR's labels.

        Args:
            images: one image or a list (PIL images, file paths, numpy arrays, torch tensors; see [`to_image_tensor`]);
                a 4-D array or tensor is a batch of `(C, H, W)` (or numpy `(H, W, C)`) images.
            annotations (`dict` or `list[dict]`, *optional*): one per image, COCO detection or Hub objects format
                (see [`prepare_detection_annotation`]); boxes in absolute COCO xywh of the image as given. Or COCO
                panoptic format (with `segments_info`, see [`prepare_panoptic_annotation`]): the labels then also
                have `masks` (`torch.BoolTensor` `(n, h, w)` at the unpadded resized size, nearest-neighbour resized).
            return_tensors (`str`, *optional*): `None` or `"pt"`; the outputs are torch tensors either way.
            masks_path (`str` or `Path`, *optional*): folder of the panoptic PNGs named by each annotation's
                `file_name`.
            kwargs: per-call overrides of the settings (`do_resize`, `size`, `resample`, `do_rescale`,
                `rescale_factor`, `do_normalize`, `image_mean`, `image_std`, `do_pad`, `pad_size`, `remove_crowd`,
                `num_labels`).

        Returns:
            [`BatchFeature`] with
            - `pixel_values`: `torch.FloatTensor` of shape `(batch_size, 3, H, W)`, padded with zeros bottom/right
              (a list of `(3, h_i, w_i)` tensors when `do_pad=False`);
            - `pixel_mask`: `torch.LongTensor` of shape `(batch_size, H, W)`, 1 on real pixels (only with padding);
            - `labels` (with `annotations`): one dict per image: `class_labels` (`torch.LongTensor` `(n,)`), `boxes`
              (`torch.FloatTensor` `(n, 4)`, cx, cy, w, h normalized by the **unpadded** resized image), `image_id`
              (`(1,)`), `orig_size` and `size` (`[height, width]` before and after resizing), `area` (`(n,)`, in
              resized pixels), `iscrowd` (`(n,)`), and `dropped` (`dict[str, int]`, boxes removed by reason).
        """
        if return_tensors not in (None, "pt") and str(getattr(return_tensors, "value", return_tensors)) != "pt":
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        settings = self._settings(kwargs)
        image_list = self._as_image_list(images)
        annotation_list = self._as_annotation_list(annotations, len(image_list))
        interpolation = _RESAMPLE[settings["resample"]]

        resized, labels = [], []
        for i, raw in enumerate(image_list):
            image = to_image_tensor(raw, i)
            target = None
            if annotation_list is not None:
                if isinstance(annotation_list[i], Mapping) and "segments_info" in annotation_list[i]:
                    target = prepare_panoptic_annotation(annotation_list[i], tuple(image.shape[-2:]), i, masks_path,
                                                         settings["num_labels"])
                else:
                    target = prepare_detection_annotation(
                        annotation_list[i], tuple(image.shape[-2:]), i, settings["remove_crowd"],
                        settings["num_labels"]
                    )
            if settings["do_resize"]:
                new_size = output_size(image.shape[-2], image.shape[-1], settings["size"])
                image, target = resize_with_target(image, target, new_size, interpolation)
            resized.append(image)
            if target is not None:
                labels.append(encode_target(target))

        normalization = self._normalization(settings)
        if settings["do_pad"]:
            pad_size = settings["pad_size"]
            height, width = _padded_size([img.shape[-2:] for img in resized],
                                         None if pad_size is None else (pad_size["height"], pad_size["width"]))
            pixel_values = torch.empty((len(resized), 3, height, width), dtype=torch.float32)
            pixel_mask = torch.empty((len(resized), height, width), dtype=torch.int64)
            for i, image in enumerate(resized):
                h, w = image.shape[-2:]
                self._normalize_into(pixel_values[i, :, :h, :w], image, *normalization)
                pixel_values[i, :, h:, :] = 0  # padding; the buffer is uninitialised
                pixel_values[i, :, :h, w:] = 0
                pixel_mask[i, :h, :w] = 1
                pixel_mask[i, h:, :] = 0
                pixel_mask[i, :h, w:] = 0
            data = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
        else:
            data = {"pixel_values": [
                self._normalize_into(torch.empty(img.shape, dtype=torch.float32), img, *normalization)
                for img in resized
            ]}
        encoding = BatchFeature(data)
        if annotation_list is not None:
            encoding["labels"] = labels
        return encoding

    @staticmethod
    def _as_image_list(images) -> list:
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            return list(images)
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("images is an empty list")
            return list(images)
        return [images]

    @staticmethod
    def _as_annotation_list(annotations, num_images: int) -> list | None:
        if annotations is None:
            return None
        if isinstance(annotations, Mapping):
            annotations = [annotations]
        if not isinstance(annotations, (list, tuple)):
            raise TypeError(f"annotations must be a dict or a list of dicts, got {type(annotations).__name__}")
        if len(annotations) != num_images:
            raise ValueError(f"annotations must have one entry per image ({num_images}), got {len(annotations)}")
        return list(annotations)

    def post_process_object_detection(
        self,
        outputs,
        threshold: float = 0.5,
        target_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
        top_k: int | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections from the model's outputs: scores, labels and absolute xyxy boxes in the original images.

        Args:
            outputs: a [`DetrObjectDetectionOutput`] (or dict) with `logits` (`(batch_size, num_queries,
                num_labels + 1)`, the last class "no object") and `pred_boxes` (`(batch_size, num_queries, 4)`,
                normalized cx, cy, w, h relative to each image's unpadded content).
            threshold (`float`): keep detections whose score (the highest class probability other than "no object")
                is strictly above it.
            target_sizes (`torch.Tensor` of shape `(batch_size, 2)` or a list of `(height, width)`, *optional*): size of
                each original image (e.g. `labels[i]["orig_size"]`); boxes are scaled to it. Without it boxes stay
                normalized xyxy.
            top_k (`int`, *optional*): keep at most this many detections per image (the highest scores).

        Returns:
            `list[dict]`, one per image, sorted by decreasing score: `scores` (`torch.FloatTensor` `(k,)`), `labels`
            (`torch.LongTensor` `(k,)`), `boxes` (`torch.FloatTensor` `(k, 4)`, absolute x0, y0, x1, y1; not clipped).
        """
        logits, pred_boxes = _get(outputs, "logits"), _get(outputs, "pred_boxes")
        if logits.ndim != 3 or pred_boxes.shape != (*logits.shape[:2], 4):
            raise ValueError(
                f"logits must be (batch_size, num_queries, num_labels + 1) and pred_boxes (batch_size, num_queries, 4),"
                f" got shapes {tuple(logits.shape)} and {tuple(pred_boxes.shape)}"
            )
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
        scores, classes = logits.float().softmax(-1)[..., :-1].max(-1)  # (B, Q)
        boxes = box_convert(pred_boxes.float(), "cxcywh", "xyxy")  # (B, Q, 4)
        if target_sizes is not None:
            sizes = torch.as_tensor(
                [list(map(float, s)) for s in target_sizes] if not isinstance(target_sizes, torch.Tensor)
                else target_sizes, dtype=torch.float32, device=boxes.device,
            )
            if sizes.shape != (logits.shape[0], 2):
                raise ValueError(
                    f"target_sizes must have one (height, width) per image ({logits.shape[0]}), got shape "
                    f"{tuple(sizes.shape)}"
                )
            boxes = boxes * sizes[:, [1, 0, 1, 0]][:, None, :]
        results = []
        for image_scores, image_classes, image_boxes in zip(scores, classes, boxes, strict=True):
            keep = torch.nonzero(image_scores > threshold).flatten()
            order = keep[image_scores[keep].argsort(descending=True)]
            if top_k is not None:
                order = order[:top_k]
            results.append({"scores": image_scores[order], "labels": image_classes[order], "boxes": image_boxes[order]})
        return results


DetrImageProcessor = DetrviltDetrImageProcessor
