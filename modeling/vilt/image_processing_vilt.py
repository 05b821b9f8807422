"""ViLT's image processor: the "pixelbert" resize, mean/std 0.5, padding with `pixel_mask`, RandAugment for training.

Kim et al., 2021, "ViLT: Vision-and-Language Transformer Without Convolution or Region Supervision". The
preprocessing follows the official code (dandelin/ViLT, ``vilt/transforms/utils.py`` ``MinMaxResize`` and
``pixelbert_transform``):

- resize so that the shorter side is `shortest_edge` (384) and the longer at most ``int(1333 / 800 * 384) = 639``;
  both sides are rounded (``int(x + 0.5)``) and then floored to multiples of `size_divisor` (32), bicubic. A
  landscape 4:3 photo becomes 384 x 512; the widest output is 608 (639 floors to 608);
- rescale to [0, 1] and normalize with mean = std = 0.5 per channel;
- pad with zeros bottom/right to the largest image of the batch; `pixel_mask` is 1 on real pixels.

Training mode (``do_augment=True``, as ``pixelbert_transform_randaug``) applies RandAugment before the resize: N=2
operations drawn with replacement from the official list (``vilt/transforms/randaug.py``: the list of
ildoonet/pytorch-randaugment without Invert and Cutout, which leaves 14 operations, SolarizeAdd included; the
official list has no Identity), each at magnitude M=9 of 30, with a random sign for the geometric ones. The
operations are built on ``torchvision.transforms.v2.functional`` (torchvision's own ``RandAugment`` draws from
another list and magnitude scale, so it is not used as is), called on a PIL image so that torchvision dispatches to
its PIL kernels: the official code augments PIL images too, and on the CPU these are 10-100x faster than the tensor
kernels (an affine warp of a 427 x 640 image: about 0.4 ms against 100 ms).

Relation to transformers' ``ViltImageProcessor`` (its torchvision backend): the same size rule, the same
antialiased bicubic kernel on the uint8 image and the same normalization, so `pixel_values` agree within 1e-5 and
`pixel_mask` is equal (``tests/test_vilt_processing.py`` checks it on scikit-image's photographs). The class is
named ``DetrviltViltImageProcessor`` (exported as ``detrvilt.ViltImageProcessor``) so that ``AutoImageProcessor``
never loads one in place of the other. transformers' processor (5.24) fails on 2-D grayscale arrays; ours, like the
official ``convert("RGB")``, repeats the channel. The official list holds 14 operations where the issue said 13: we
keep the official list (SolarizeAdd included). Every input becomes RGB (grayscale repeated, alpha composited on white,
palette and 16-bit decoded, EXIF orientation applied), as in detrvilt's DETR processor.

This file travels to the Hub with the model, so it imports only torch, torchvision, numpy, PIL and transformers (the
image decoding below repeats the DETR processor's for that reason: Hub folders cannot import each other).
"""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from transformers import BaseImageProcessor, BatchFeature

VILT_MEAN = (0.5, 0.5, 0.5)
VILT_STD = (0.5, 0.5, 0.5)
# The official longest side is derived from DETR's 800/1333 (COCO's typical aspect ratio).
MAX_SHORTER_EDGE, MAX_LONGER_EDGE = 800, 1333
_RESAMPLE = {0: InterpolationMode.NEAREST, 2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC}
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def pixelbert_size(height: int, width: int, shortest_edge: int = 384, longest_edge: int | None = None,
                   size_divisor: int = 32) -> tuple[int, int]:
    """The official ``MinMaxResize`` output `(height, width)`.

    Args:
        height, width (`int`): size of the input image.
        shortest_edge (`int`): target of the shorter side (384 for ViLT).
        longest_edge (`int`, *optional*): cap of the longer side; defaults to ``int(1333 / 800 * shortest_edge)``.
        size_divisor (`int`): both sides are floored to a multiple of it (32, the patch size); at least one multiple.
    """
    if longest_edge is None:
        longest_edge = int(MAX_LONGER_EDGE / MAX_SHORTER_EDGE * shortest_edge)
    if height < width:
        new_height, new_width = float(shortest_edge), width * (shortest_edge / height)
    else:
        new_height, new_width = height * (shortest_edge / width), float(shortest_edge)
    if max(new_height, new_width) > longest_edge:
        scale = longest_edge / max(new_height, new_width)
        new_height, new_width = new_height * scale, new_width * scale
    new_height, new_width = int(new_height + 0.5), int(new_width + 0.5)
    if size_divisor:
        new_height = max(new_height // size_divisor, 1) * size_divisor
        new_width = max(new_width // size_divisor, 1) * size_divisor
    return new_height, new_width


# ----------------------------------------------------------------------------------------------------------------
# Images


def _describe(image, index) -> str:
    name = f"images[{index}]" if index is not None else "image"
    filename = getattr(image, "filename", None) or (str(image) if isinstance(image, str) else None)
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
    """An upright RGB (H, W, 3) uint8 array (float32 in [0, 1] for 16-bit images)."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
        if orientation is not None and orientation != 1:
            image = ImageOps.exif_transpose(image)
        if image.mode == "RGB":
            return np.asarray(image)
        if image.mode in _SIXTEEN_BIT_MODES:
            gray = np.asarray(image).astype(np.float32).clip(0, 65535) / 65535.0
            return np.repeat(gray[..., None], 3, axis=-1)
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{_describe(image, index)}: cannot decode the image ({image.mode}): {error}") from error


def to_image_tensor(image, index: int | None = None) -> torch.Tensor:
    """Any supported image as an RGB `(3, H, W)` tensor: uint8 for 8-bit inputs, float32 in [0, 1] otherwise.

    Args:
        image: a PIL image (any mode; EXIF orientation applied), a file path, a `numpy.ndarray` (`(H, W)` or
            `(H, W, C)`) or a `torch.Tensor` (`(H, W)` or `(C, H, W)`), C in 1 (gray), 3 (RGB) or 4 (RGBA).
        index (`int`, *optional*): position in the batch, quoted in errors.

    Raises:
        `ValueError` naming the image (and file) when it cannot be decoded or has an unsupported shape or range.
    """
    name = _describe(image, index)
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        image = open_image(image, index)
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{name} has no pixels: size (width, height) = {image.size}")
        array = _pil_to_array(image, index)
        if not array.flags.writeable:
            array = array.copy()
        return torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W) view
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:
            image = image.astype(np.float32) / 65535.0
        tensor = torch.from_numpy(np.array(image, copy=True))
        if tensor.ndim == 3:
            tensor = tensor.permute(2, 0, 1)  # numpy is channels-last
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
    else:
        raise TypeError(f"{name} must be a PIL image, a file path, a numpy array or a torch tensor, "
                        f"got {type(image).__name__}")
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4) or tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
        raise ValueError(f"{name} must be (H, W), (H, W, C) array or (C, H, W) tensor with C in 1, 3, 4, "
                         f"got shape {tuple(image.shape)}")
    if tensor.dtype != torch.uint8:
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be uint8, uint16 or floating point, got dtype {tensor.dtype}")
        tensor = tensor.float()
        low, high = tensor.min().item(), tensor.max().item()
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(f"{name} is a floating-point image with values in [{low}, {high}]; expected [0, 1]")
    if tensor.shape[0] == 1:
        return tensor.expand(3, -1, -1)
    if tensor.shape[0] == 4:
        rgb, alpha = tensor[:3], tensor[3:]
        if tensor.dtype == torch.uint8:
            a = alpha.float() / 255.0
            return (rgb.float() * a + 255.0 * (1.0 - a)).round_().to(torch.uint8)
        return rgb * alpha + (1.0 - alpha)
    return tensor


# ----------------------------------------------------------------------------------------------------------------
# RandAugment (official ViLT list)


def _flip(value: float, generator: torch.Generator) -> float:
    return -value if torch.rand((), generator=generator).item() > 0.5 else value


def _solarize_add(image: Image.Image, addition: float, threshold: int = 128) -> Image.Image:
    # add, clip to 255, then invert values >= threshold (official SolarizeAdd), as one lookup table per channel
    table = [(v if v < threshold else 255 - v) for v in (min(255, i + int(addition)) for i in range(256))]
    return image.point(table * len(image.getbands()))


def _shear(image: Image.Image, degrees_x: float, degrees_y: float) -> Image.Image:
    # PIL's shear (the official code) is about the top-left corner: center=[0, 0] keeps that.
    return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=[degrees_x, degrees_y],
                    interpolation=InterpolationMode.NEAREST, fill=0, center=[0, 0])


# (name, min, max, signed, op(pil_image, value)); value = M / 30 * (max - min) + min.
RANDAUGMENT_OPS = (
    ("AutoContrast", 0.0, 1.0, False, lambda img, v: F.autocontrast(img)),
    ("Equalize", 0.0, 1.0, False, lambda img, v: F.equalize(img)),
    ("Rotate", 0.0, 30.0, True, lambda img, v: F.rotate(img, v, interpolation=InterpolationMode.NEAREST, fill=0)),
    ("Posterize", 0.0, 4.0, False, lambda img, v: F.posterize(img, max(1, int(v)))),
    ("Solarize", 0.0, 256.0, False, lambda img, v: F.solarize(img, v)),
    ("SolarizeAdd", 0.0, 110.0, False, lambda img, v: _solarize_add(img, v)),
    ("Color", 0.1, 1.9, False, lambda img, v: F.adjust_saturation(img, v)),
    ("Contrast", 0.1, 1.9, False, lambda img, v: F.adjust_contrast(img, v)),
    ("Brightness", 0.1, 1.9, False, lambda img, v: F.adjust_brightness(img, v)),
    ("Sharpness", 0.1, 1.9, False, lambda img, v: F.adjust_sharpness(img, v)),
    ("ShearX", 0.0, 0.3, True, lambda img, v: _shear(img, math.degrees(math.atan(v)), 0.0)),
    ("ShearY", 0.0, 0.3, True, lambda img, v: _shear(img, 0.0, math.degrees(math.atan(v)))),
    ("TranslateX", 0.0, 100.0, True, lambda img, v: F.affine(img, angle=0.0, translate=[int(v), 0], scale=1.0,
                                                             shear=[0.0, 0.0], fill=0)),
    ("TranslateY", 0.0, 100.0, True, lambda img, v: F.affine(img, angle=0.0, translate=[0, int(v)], scale=1.0,
                                                             shear=[0.0, 0.0], fill=0)),
)
RANDAUGMENT_OP_NAMES = tuple(op[0] for op in RANDAUGMENT_OPS)


def rand_augment(image: torch.Tensor, num_ops: int = 2, magnitude: float = 9, generator: torch.Generator | None = None,
                 return_ops: bool = False):
    """Apply `num_ops` operations drawn with replacement from [`RANDAUGMENT_OPS`] at `magnitude` (of 30).

    Args:
        image (`torch.Tensor`): `(3, H, W)` uint8 (float images in [0, 1] are quantized to uint8 first); the
            operations run on it as an RGB PIL image (torchvision's PIL kernels).
        generator (`torch.Generator`, *optional*): the random stream (operations, signs); the same seed gives the same
            output.
        return_ops (`bool`): also return the names of the operations applied.

    Returns:
        the augmented `(3, H, W)` uint8 tensor (same shape), and the op names when `return_ops`.
    """
    if image.dtype != torch.uint8:
        image = (image * 255.0).round().clamp(0, 255).to(torch.uint8)
    image = F.to_pil_image(image.contiguous())
    applied = []
    for index in torch.randint(len(RANDAUGMENT_OPS), (num_ops,), generator=generator).tolist():
        name, low, high, signed, op = RANDAUGMENT_OPS[index]
        value = float(magnitude) / 30.0 * (high - low) + low
        if signed:
            value = _flip(value, generator)
        image = op(image, value)
        applied.append(name)
    image = F.pil_to_tensor(image)
    return (image, applied) if return_ops else image


# ----------------------------------------------------------------------------------------------------------------
# The processor


class DetrviltViltImageProcessor(BaseImageProcessor):
    r"""Image processor of detrvilt's ViLT (exported as `detrvilt.ViltImageProcessor`).

    Args:
        do_resize (`bool`, defaults to `True`): the pixelbert resize (see [`pixelbert_size`]).
        size (`dict` or `int`, defaults to `{"shortest_edge": 384}`): the shorter side, optionally with
            `"longest_edge"` (defaults to ``int(1333 / 800 * shortest_edge)``).
        size_divisor (`int`, defaults to 32): both sides are floored to a multiple of it.
        resample (`int`, defaults to 3): PIL's code of the filter: 0 nearest, 2 bilinear, 3 bicubic (antialiased).
        do_rescale (`bool`), rescale_factor (`float`, 1/255): 8-bit images to [0, 1].
        do_normalize (`bool`), image_mean, image_std (defaults to 0.5 each): normalization.
        do_pad (`bool`, defaults to `True`): pad bottom/right to the batch's largest image and return `pixel_mask`.
        do_augment (`bool`, defaults to `False`): the training mode: RandAugment before the resize.
        rand_augment_num_ops (`int`, 2), rand_augment_magnitude (`float`, 9): RandAugment's N and M.
    """

    model_input_names = ["pixel_values", "pixel_mask"]

    def __init__(
        self,
        do_resize: bool = True,
        size: dict | int | None = None,
        size_divisor: int = 32,
        resample: int = 3,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] = VILT_MEAN,
        image_std: Sequence[float] = VILT_STD,
        do_pad: bool = True,
        do_augment: bool = False,
        rand_augment_num_ops: int = 2,
        rand_augment_magnitude: float = 9,
        **kwargs,
    ):
        kwargs.pop("default_to_square", None)  # found in transformers' ViLT configs; our rule never squares
        super().__init__(**kwargs)
        self.do_resize = bool(do_resize)
        self.size = self._check_size(384 if size is None else size)
        if not isinstance(size_divisor, int) or size_divisor < 1:
            raise ValueError(f"size_divisor must be a positive integer, got {size_divisor!r}")
        self.size_divisor = size_divisor
        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)} (nearest, bilinear, bicubic), "
                             f"got {resample!r}")
        self.resample = int(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = self._check_channels(image_mean, "image_mean")
        self.image_std = self._check_channels(image_std, "image_std")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        self.do_pad = bool(do_pad)
        self.do_augment = bool(do_augment)
        if not isinstance(rand_augment_num_ops, int) or rand_augment_num_ops < 0:
            raise ValueError(f"rand_augment_num_ops must be a non-negative integer, got {rand_augment_num_ops!r}")
        if not 0 <= float(rand_augment_magnitude) <= 30:
            raise ValueError(f"rand_augment_magnitude must be in [0, 30], got {rand_augment_magnitude!r}")
        self.rand_augment_num_ops = rand_augment_num_ops
        self.rand_augment_magnitude = float(rand_augment_magnitude)

    @staticmethod
    def _check_size(size) -> dict:
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            size = {"shortest_edge": int(size)}
        if not isinstance(size, dict) or "shortest_edge" not in size or set(size) - {"shortest_edge", "longest_edge"}:
            raise ValueError(f"size must be an int or {{'shortest_edge': int[, 'longest_edge': int]}}, got {size!r}")
        for key, value in size.items():
            if value is None and key == "longest_edge":
                continue
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"size[{key!r}] must be a positive integer, got {value!r}")
        return {key: (None if value is None else int(value)) for key, value in size.items()}

    @staticmethod
    def _check_channels(values, name) -> list[float]:
        values = [float(v) for v in (values if isinstance(values, Sequence) else [values] * 3)]
        if len(values) != 3:
            raise ValueError(f"{name} must have 3 values (RGB), got {values}")
        return values

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in output.items() if not k.startswith("_")}

    def __call__(self, images, **kwargs) -> BatchFeature:
        """Same as [`preprocess`]."""
        return self.preprocess(images, **kwargs)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The resized `(height, width)` of an image of this size."""
        return pixelbert_size(height, width, self.size["shortest_edge"], self.size.get("longest_edge"),
                              self.size_divisor)

    def resize_image(self, image: torch.Tensor, resample: int | None = None) -> torch.Tensor:
        """The pixelbert resize of one `(3, H, W)` image (uint8 or float)."""
        new_size = self.output_size(image.shape[-2], image.shape[-1])
        if tuple(image.shape[-2:]) == new_size:
            return image
        mode = _RESAMPLE[self.resample if resample is None else resample]
        return F.resize(image, list(new_size), interpolation=mode, antialias=True)

    def normalize_image(self, image: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rescale and normalize one `(3, H, W)` image (uint8, or float in [0, 1]) into float32 (`out` if given)."""
        scale = self.rescale_factor if (self.do_rescale and image.dtype == torch.uint8) else 1.0
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        if not self.do_normalize:
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        if out is None:
            out = torch.empty(image.shape, dtype=torch.float32)
        # out = image * (scale / std) - mean / std, one pass (uint8 promoted by the in-place ops)
        return out.copy_(image).mul_(scale / std).sub_(mean / std)

    def prepare_image(self, image, index: int | None = None, augment: bool | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode, (augment,) resize one image: the `(3, h, w)` tensor before normalization."""
        tensor = to_image_tensor(image, index)
        if self.do_augment if augment is None else augment:
            tensor = rand_augment(tensor, self.rand_augment_num_ops, self.rand_augment_magnitude, generator)
        if self.do_resize:
            tensor = self.resize_image(tensor.contiguous() if tensor.dtype != torch.uint8 else tensor)
        return tensor

    def pad(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalize `(3, h_i, w_i)` images into one zero-padded `(B, 3, H, W)` batch and its `(B, H, W)` mask."""
        if len(images) == 0:
            raise ValueError("pad needs at least one image, got an empty list")
        height = max(int(img.shape[-2]) for img in images)
        width = max(int(img.shape[-1]) for img in images)
        pixel_values = torch.zeros((len(images), 3, height, width), dtype=torch.float32)
        pixel_mask = torch.zeros((len(images), height, width), dtype=torch.int64)
        for i, img in enumerate(images):
            h, w = img.shape[-2:]
            self.normalize_image(img, out=pixel_values[i, :, :h, :w])
            pixel_mask[i, :h, :w] = 1
        return pixel_values, pixel_mask

    def preprocess(self, images, return_tensors: str | None = None, do_augment: bool | None = None,
                   generator: torch.Generator | None = None, **kwargs) -> BatchFeature:
        r"""Resize, rescale, normalize and pad a batch of images.

        Args:
            images: one image or a list (PIL images, file paths, numpy arrays, torch tensors).
            return_tensors (`str`, *optional*): `None` or `"pt"`; outputs are torch tensors either way.
            do_augment (`bool`, *optional*): override the training mode for this call.
            generator (`torch.Generator`, *optional*): the RandAugment random stream.
            kwargs: overrides of the other settings for this call (`do_resize`, `size`, `do_pad`, ...).

        Returns:
            [`BatchFeature`] with `pixel_values` (`torch.FloatTensor` of shape `(batch_size, 3, H, W)`, zero-padded
            bottom/right; a list of `(3, h_i, w_i)` tensors when `do_pad=False`) and `pixel_mask`
            (`torch.LongTensor` of shape `(batch_size, H, W)`, 1 on real pixels; only with padding).
        """
        if return_tensors not in (None, "pt") and str(getattr(return_tensors, "value", return_tensors)) != "pt":
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        processor = self
        if kwargs:
            unknown = set(kwargs) - set(self.to_dict())
            if unknown:
                raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
            settings = self.to_dict()
            settings.update({k: v for k, v in kwargs.items() if v is not None})
            settings.pop("image_processor_type", None)
            processor = type(self)(**settings)
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise ValueError("images is an empty list")
        prepared = [processor.prepare_image(img, i, do_augment, generator) for i, img in enumerate(images)]
        if processor.do_pad:
            pixel_values, pixel_mask = processor.pad(prepared)
            return BatchFeature({"pixel_values": pixel_values, "pixel_mask": pixel_mask})
        return BatchFeature({"pixel_values": [processor.normalize_image(img) for img in prepared]})


ViltImageProcessor = DetrviltViltImageProcessor
