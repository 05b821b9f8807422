"""Decoding an image value from a dataset row, shared by DETR's and ViLT's data pipelines.

It uses the DETR image processor's decoding (`open_image`, `to_image_tensor`: EXIF orientation, RGB, alpha composited
on white); ViLT's processor keeps a copy of those two functions in its own folder because files under
`modeling/<model>/` may import only their own folder (the Hub boundary).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import torch

from ..modeling.detr.image_processing_detr import open_image, to_image_tensor


def decode_image(value, description: str) -> torch.Tensor:
    """An image value from a dataset row as an RGB `(3, H, W)` tensor (see `to_image_tensor`).

    Args:
        value: a PIL image, a file path, an array/tensor, or the undecoded `datasets.Image` storage
            `{"path": str | None, "bytes": bytes | None}`.
        description (`str`): how to name the example in errors (e.g. `"image_id 17"`).

    Raises:
        `ValueError` naming the example and the file when it is missing, corrupt or truncated.
    """
    try:
        if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
            path = value.get("path")
            if value.get("bytes") is not None:
                source = io.BytesIO(value["bytes"])
                image = open_image(source)
            elif path is not None:
                image = open_image(path)
            else:
                raise ValueError("the image has neither bytes nor a path")
            return to_image_tensor(image)
        return to_image_tensor(value)
    except (ValueError, TypeError) as error:
        where = value.get("path") if isinstance(value, Mapping) else getattr(value, "filename", None)
        file = f" (file {where!r})" if where and str(where) not in str(error) else ""
        raise type(error)(f"{description}{file}: {error}") from error
