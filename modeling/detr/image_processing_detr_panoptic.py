"""COCO panoptic annotations in, and panoptic / instance / semantic maps out, for DETR's mask head.

Carion et al., 2020, section 4.4. Annotations follow the COCO panoptic format (Kirillov et al., 2019): a PNG whose
RGB colour encodes a segment id (``id = R + 256 G + 256^2 B``, 0 = void) and a ``segments_info`` list with each
segment's ``id``, ``category_id`` and ``iscrowd``. As facebookresearch/detr's ``datasets/coco_panoptic.py`` does,
every listed segment becomes one target (crowd segments included, flagged in ``iscrowd``): a binary mask, its class,
and the tight box of the mask (``torchvision.ops.masks_to_boxes``).

Post-processing follows the official ``PostProcessPanoptic`` / ``PostProcessSegm`` (``models/segmentation.py``):
queries whose most likely class (no-object included) is a real class with probability above ``threshold`` (0.85
for panoptic, as the official) are kept; each pixel goes to the kept query with the highest mask logit; queries of
the same stuff class (``label_ids_to_fuse``) are merged into one segment; segments of at most 4 pixels are removed
and the assignment is redone until none is left. One change: the official code fuses stuff only in the first
assignment (its repeated assignments after removing tiny segments drop the fusion and hand the fused queries'
pixels to other queries); here fused queries stay one segment throughout. One addition, off by default, for
transformers' ``image-segmentation`` pipeline (which passes ``mask_threshold`` and ``overlap_mask_area_threshold``):
with ``overlap_mask_area_threshold`` a segment must also win more than that fraction of its own mask (its pixels with
``sigmoid(mask logit) > mask_threshold``), the meaning transformers gives these two arguments. Mask logits cover the
padded input:
with ``pixel_mask`` they are upsampled to the padded size and cropped to each image before the resize to
``target_sizes``, so an image's result does not depend on its batch.

This file travels to the Hub with the model: it imports only torch, torchvision, numpy and PIL.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import box_convert, masks_to_boxes

VOID_ID = 0


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic segment ids from an `(H, W, 3)` RGB array: `R + 256 G + 256^2 B`, `(H, W)` int64."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be an (H, W, 3) array, got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """The inverse of [`rgb_to_id`]: `(H, W)` non-negative ids below 256^3 to an `(H, W, 3)` uint8 RGB array."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"ids must be in [0, 256**3), got values in [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def load_segment_ids(segmentation, where: str = "segmentation") -> np.ndarray:
    """`(H, W)` int64 segment ids from a panoptic PNG: a path, a PIL image or an `(H, W, 3)` RGB array (colour-coded
    ids), or an `(H, W)` integer array of ids."""
    if isinstance(segmentation, (str, Path)):
        with Image.open(segmentation) as png:
            segmentation = np.array(png.convert("RGB"))
    elif isinstance(segmentation, Image.Image):
        segmentation = np.array(segmentation.convert("RGB"))
    array = np.asarray(segmentation.numpy() if isinstance(segmentation, torch.Tensor) else segmentation)
    if array.ndim == 3:
        return rgb_to_id(array)
    if array.ndim == 2 and (np.issubdtype(array.dtype, np.integer)):
        return array.astype(np.int64)
    raise ValueError(f"{where} must be a panoptic PNG (path, PIL image, (H, W, 3) RGB array) or an (H, W) integer "
                     f"array of segment ids, got {type(segmentation).__name__} of shape {array.shape}")


def prepare_panoptic_annotation(annotation: Mapping, image_size: tuple[int, int], index: int = 0,
                                masks_path=None, num_labels: int | None = None) -> dict:
    """One image's COCO panoptic annotation as a target with a mask, class and box per segment.

    Args:
        annotation (`dict`): `{"segments_info": [{"id", "category_id", "iscrowd" (optional), "area" (optional)}],
            "image_id" (optional), and the PNG: "segmentation" (see [`load_segment_ids`]) or "file_name" (read from
            `masks_path`)}`.
        image_size (`tuple[int, int]`): `(height, width)` of the image; the PNG must have the same size.
        index (`int`): position in the batch, quoted in errors.
        masks_path (`str` or `Path`, *optional*): folder of the PNGs, for annotations that give `file_name`.
        num_labels (`int`, *optional*): when given, category ids must be in `[0, num_labels)`.

    Returns:
        `dict` with `image_id`, `class_labels` (`(n,)`), `boxes` (`tv_tensors.BoundingBoxes` XYXY absolute, the tight
        box of each mask), `masks` (`tv_tensors.Mask` `(n, H, W)` bool), `area` (`(n,)`, the pixel count unless the
        annotation gives one), `iscrowd` (`(n,)`), `orig_size` and `dropped` (all zero: nothing is dropped).
    """
    name = f"annotations[{index}]"
    segments = annotation.get("segments_info")
    if not isinstance(segments, Sequence) or isinstance(segments, (str, bytes)):
        raise TypeError(f"{name}['segments_info'] must be a list of dicts, got {type(segments).__name__}")
    if "segmentation" in annotation:
        ids = load_segment_ids(annotation["segmentation"], f"{name}['segmentation']")
    elif "file_name" in annotation and masks_path is not None:
        png = Path(masks_path) / Path(annotation["file_name"]).with_suffix(".png")
        if not png.is_file():
            raise ValueError(f"{name}: the panoptic PNG {str(png)!r} does not exist")
        ids = load_segment_ids(png, str(png))
    else:
        raise ValueError(f"{name} needs the panoptic PNG: a 'segmentation' entry, or 'file_name' with masks_path, "
                         f"got keys {sorted(annotation)}")
    if ids.shape != tuple(image_size):
        raise ValueError(f"{name}: the panoptic PNG has size {ids.shape}, the image {tuple(image_size)}")
    for j, segment in enumerate(segments):
        if not isinstance(segment, Mapping) or "id" not in segment or "category_id" not in segment:
            raise ValueError(f"{name}['segments_info'][{j}] must be a dict with 'id' and 'category_id', "
                             f"got {segment!r}")
        category = segment["category_id"]
        if not isinstance(category, (int, np.integer)) or category < 0 or (num_labels and category >= num_labels):
            raise ValueError(f"{name}['segments_info'][{j}]['category_id'] must be an integer in [0, "
                             f"{num_labels if num_labels else 'inf'}), got {category!r}")

    segment_ids = torch.as_tensor([int(s["id"]) for s in segments], dtype=torch.int64)
    masks = torch.from_numpy(ids)[None] == segment_ids[:, None, None]  # (n, H, W)
    present = masks.flatten(1).any(1)
    boxes = torch.zeros((len(segments), 4))
    if present.any():
        boxes[present] = masks_to_boxes(masks[present]).float()
    areas = [s.get("area") for s in segments]
    pixel_area = masks.flatten(1).sum(1).float()
    area = torch.as_tensor([float(a) if a is not None else float(pixel_area[j]) for j, a in enumerate(areas)])
    image_id = annotation.get("image_id", -1)
    return {
        "image_id": torch.as_tensor([-1 if image_id is None else int(image_id)], dtype=torch.int64),
        "class_labels": torch.as_tensor([int(s["category_id"]) for s in segments], dtype=torch.int64),
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(image_size)),
        "masks": tv_tensors.Mask(masks),
        "area": area.reshape(-1),
        "iscrowd": torch.as_tensor([int(s.get("iscrowd", 0)) for s in segments], dtype=torch.int64),
        "orig_size": torch.as_tensor(list(image_size), dtype=torch.int64),
        "dropped": {"crowd": 0, "degenerate": 0, "nonfinite": 0, "outside": 0, "cropped": 0},
    }


# ----------------------------------------------------------------------------------------------------------------
# Post-processing


def _get(outputs, key):
    return outputs[key] if isinstance(outputs, Mapping) else getattr(outputs, key)


def _sizes(sizes, batch_size: int, name: str) -> list | None:
    if sizes is None:
        return None
    sizes = [tuple(int(v) for v in s) for s in (sizes.tolist() if isinstance(sizes, torch.Tensor) else sizes)]
    if len(sizes) != batch_size or any(len(s) != 2 for s in sizes):
        raise ValueError(f"{name} must have one (height, width) per image ({batch_size}), got {sizes}")
    return sizes


def _image_mask_logits(mask_logits: torch.Tensor, pixel_mask: torch.Tensor | None, index: int,
                       target_size: tuple[int, int] | None) -> torch.Tensor:
    """`(K, h, w)` mask logits of one image over the padded input -> `(K, H_t, W_t)` over the image (bilinear)."""
    logits = mask_logits.float()[None]  # (1, K, h, w)
    if logits.shape[1] == 0:  # nothing kept: interpolate refuses empty inputs
        size = target_size
        if size is None and pixel_mask is not None:
            valid = pixel_mask[index].bool()
            size = (int(valid.any(1).sum()), int(valid.any(0).sum()))
        return logits.new_zeros((0, *(size if size is not None else logits.shape[-2:])))
    if pixel_mask is not None:
        valid = pixel_mask[index].bool()
        height, width = int(valid.any(1).sum()), int(valid.any(0).sum())
        logits = F.interpolate(logits, size=pixel_mask.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[..., :height, :width]
    if target_size is not None and tuple(logits.shape[-2:]) != tuple(target_size):
        logits = F.interpolate(logits, size=target_size, mode="bilinear", align_corners=False)
    return logits[0]


def _check_outputs(outputs):
    logits, masks = _get(outputs, "logits"), _get(outputs, "pred_masks")
    if logits.ndim != 3 or masks.ndim != 4 or masks.shape[:2] != logits.shape[:2]:
        raise ValueError(f"outputs must have logits (batch_size, num_queries, num_labels + 1) and pred_masks "
                         f"(batch_size, num_queries, h, w), got {tuple(logits.shape)} and {tuple(masks.shape)}")
    # Post-processing reads values only: detached, so outputs of a forward with gradients need no torch.no_grad().
    return logits.detach().float(), masks.detach()


class DetrSegmentationPostProcessingMixin:
    """The image processor's segmentation post-processing (mixed into [`DetrviltDetrImageProcessor`])."""

    def post_process_semantic_segmentation(self, outputs, target_sizes=None, pixel_mask=None) -> list[torch.Tensor]:
        """Per-pixel classes: `argmax_c sum_q p_q(c) sigmoid(m_q)` over all queries (no-object excluded).

        Args:
            outputs: a [`DetrSegmentationOutput`] (or dict) with `logits` `(B, Q, C+1)` and `pred_masks` `(B, Q, h, w)`.
            target_sizes (list of `(height, width)`, *optional*): size of each output map (e.g. the original image).
            pixel_mask (`torch.Tensor` `(B, H, W)`, *optional*): the model's input mask; crops the padding away.

        Returns:
            `list[torch.LongTensor]`, one `(height, width)` class map per image.
        """
        logits, masks = _check_outputs(outputs)
        sizes = _sizes(target_sizes, logits.shape[0], "target_sizes")
        probs = logits.softmax(-1)[..., :-1]  # (B, Q, C)
        results = []
        for i in range(logits.shape[0]):
            mask_probs = _image_mask_logits(masks[i], pixel_mask, i, sizes[i] if sizes else None).sigmoid()
            semantic = torch.einsum("qc,qhw->chw", probs[i], mask_probs)
            results.append(semantic.argmax(0))
        return results

    def post_process_instance_segmentation(self, outputs, threshold: float = 0.5, mask_threshold: float = 0.5,
                                           target_sizes=None, pixel_mask=None) -> list[dict]:
        """Instances: the queries whose score (highest class probability but no-object) is above `threshold`.

        Returns:
            `list[dict]`, one per image, sorted by decreasing score: `scores` `(k,)`, `labels` `(k,)`, `boxes` `(k, 4)`
            (absolute xyxy in the target size when given, else normalized), and `masks` `(k, H, W)` bool
            (`sigmoid(mask logit) > mask_threshold`, at the target size, or at the cropped input / mask resolution).
        """
        logits, masks = _check_outputs(outputs)
        sizes = _sizes(target_sizes, logits.shape[0], "target_sizes")
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)  # (B, Q)
        boxes = box_convert(_get(outputs, "pred_boxes").float(), "cxcywh", "xyxy")
        results = []
        for i in range(logits.shape[0]):
            keep = torch.nonzero(scores[i] > threshold).flatten()
            keep = keep[scores[i][keep].argsort(descending=True)]
            image_boxes = boxes[i][keep]
            if sizes:
                height, width = sizes[i]
                image_boxes = image_boxes * image_boxes.new_tensor([width, height, width, height])
            mask_logits = _image_mask_logits(masks[i][keep], pixel_mask, i, sizes[i] if sizes else None)
            results.append({"scores": scores[i][keep], "labels": labels[i][keep], "boxes": image_boxes,
                            "masks": mask_logits.sigmoid() > mask_threshold})
        return results

    def post_process_panoptic_segmentation(self, outputs, threshold: float = 0.85, label_ids_to_fuse=None,
                                           target_sizes=None, pixel_mask=None, min_area: int = 4,
                                           mask_threshold: float = 0.5,
                                           overlap_mask_area_threshold: float | None = None) -> list[dict]:
        """Panoptic maps, as the official `PostProcessPanoptic` (see the module docstring).

        Args:
            outputs: a [`DetrSegmentationOutput`] (or dict) with `logits` and `pred_masks`.
            threshold (`float`): keep queries whose most likely class is not no-object and whose probability is above
                it (0.85, the official value).
            label_ids_to_fuse (`set[int]`, *optional*): stuff classes: all kept queries of one of these classes form a
                single segment.
            target_sizes (list of `(height, width)`, *optional*): size of each output map.
            pixel_mask (`torch.Tensor` `(B, H, W)`, *optional*): the model's input mask; crops the padding away.
            min_area (`int`): segments of at most this many pixels are removed (4, the official value).
            mask_threshold (`float`, defaults to 0.5): a query's own mask is its pixels with `sigmoid(mask logit)`
                above it (the union of its members' masks for a fused segment); used with
                `overlap_mask_area_threshold` only.
            overlap_mask_area_threshold (`float`, *optional*): when given, a segment is also removed unless the pixels
                it wins exceed this fraction of its own mask (so a query whose mask other segments mostly cover
                leaves no fragments), and a segment with an empty own mask is removed. `None` (the default): the
                official rule, `min_area` only. transformers' `image-segmentation` pipeline passes 0.5 and
                `mask_threshold=0.5` unless told otherwise.

        Returns:
            `list[dict]`, one per image: `segmentation` (`torch.LongTensor` `(height, width)`, segment ids from 1,
            0 where no segment was kept) and `segments_info` (`list[dict]`: `id`, `label_id`, `was_fused`, `score`,
            `area`).
        """
        for name, value in (("mask_threshold", mask_threshold), ("overlap_mask_area_threshold",
                                                                 overlap_mask_area_threshold)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value <= 1):
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        logits, masks = _check_outputs(outputs)
        sizes = _sizes(target_sizes, logits.shape[0], "target_sizes")
        fuse = set(int(v) for v in (label_ids_to_fuse or ()))
        no_object = logits.shape[-1] - 1
        scores, labels = logits.softmax(-1).max(-1)  # (B, Q), no-object included as in the official code
        results = []
        for i in range(logits.shape[0]):
            keep = torch.nonzero((labels[i] != no_object) & (scores[i] > threshold)).flatten()
            mask_logits = _image_mask_logits(masks[i][keep], pixel_mask, i, sizes[i] if sizes else None)
            image_labels, image_scores = labels[i][keep], scores[i][keep]
            owner = None
            while len(keep):  # assign pixels, fuse stuff, drop tiny segments, until no segment is tiny
                group = torch.arange(len(keep))  # the query whose segment each kept query joins
                for label in fuse & set(image_labels.tolist()):
                    members = torch.nonzero(image_labels == label).flatten()
                    group[members] = members[0]
                owner = group[mask_logits.argmax(0)]  # (H, W) index of the segment's first query
                area = torch.bincount(owner.flatten(), minlength=len(keep))
                small = area <= min_area  # (K,), read at each segment's first query
                if overlap_mask_area_threshold is not None:
                    own = mask_logits.sigmoid() > mask_threshold  # (K, H, W) each query's own mask
                    segment_own = torch.zeros_like(own).index_add_(0, group, own)  # union per segment (bool add)
                    own_area = segment_own.flatten(1).sum(1)  # (K,)
                    small |= (own_area == 0) | (area <= overlap_mask_area_threshold * own_area)
                small = small[group]  # a fused segment goes or stays as a whole
                if not small.any():
                    break
                keep, image_labels, image_scores = keep[~small], image_labels[~small], image_scores[~small]
                mask_logits, owner = mask_logits[~small], None
            height, width = mask_logits.shape[-2:]
            segmentation = torch.full((height, width), VOID_ID, dtype=torch.int64)
            segments = []
            if owner is not None:
                heads = torch.nonzero(group == torch.arange(len(keep))).flatten()
                segment_of = torch.zeros(len(keep), dtype=torch.int64)
                segment_of[heads] = torch.arange(1, len(heads) + 1)
                segmentation = segment_of[owner]
                for k in heads.tolist():
                    fused = int((group == k).sum()) > 1 or int(image_labels[k]) in fuse
                    segments.append({"id": int(segment_of[k]), "label_id": int(image_labels[k]), "was_fused": fused,
                                     "score": float(image_scores[k]), "area": int(area[k])})
            results.append({"segmentation": segmentation, "segments_info": segments})
        return results
