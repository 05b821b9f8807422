"""What every picture of `detrvilt.viz` shares: headless figures of a known pixel size, images as arrays, and
attention maps on a feature or patch grid brought back onto the original image.

Figures are `matplotlib.figure.Figure` objects with an Agg canvas of their own (not pyplot's), so nothing depends on
the session's backend, no global figure list grows, and a notebook displays the returned figure. Each picture is
saved without `bbox_inches="tight"`, so a PNG is exactly `figure size (inches) x dpi` pixels.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DEFAULT_DPI = 80
DEFAULT_PANEL_INCHES = 2.5


def panel_aspect(image: np.ndarray) -> float:
    """Height / width of a panel showing `image`, kept within [0.5, 2] so that extreme shapes stay readable."""
    return min(max(image.shape[0] / image.shape[1], 0.5), 2.0)


def new_figure(rows: int, columns: int, panel_inches: float = DEFAULT_PANEL_INCHES, aspect: float = 1.0,
               title_inches: float = 0.4, label_inches: float = 0.25):
    """A figure of `rows x columns` panels (axes switched off), a strip on top for a title and one above each row
    for the panels' titles.

    Args:
        panel_inches (`float`): width of a panel. aspect (`float`): a panel's height / width.

    Returns:
        `(figure, axes)`: axes a `numpy` array of shape `(rows, columns)`. The figure is `columns * panel_inches`
        wide and `rows * (panel_inches * aspect + label_inches) + title_inches` high.
    """
    if rows < 1 or columns < 1:
        raise ValueError(f"rows and columns must be >= 1, got rows={rows}, columns={columns}")
    if panel_inches <= 0 or aspect <= 0:
        raise ValueError(f"panel_inches and aspect must be positive, got {panel_inches} and {aspect}")
    panel_height = panel_inches * aspect
    width, height = columns * panel_inches, rows * (panel_height + label_inches) + title_inches
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - (title_inches + label_inches) / height,
                           wspace=0.04, hspace=label_inches / panel_height)
    return figure, axes


def layer_name(layer: int, head: int | None) -> str:
    """`"last layer, mean of heads"`, `"layer 2, head 0"`, ... for titles."""
    where = "last layer" if layer == -1 else f"layer {layer}"
    return f"{where}, " + ("mean of heads" if head is None else f"head {head}")


def grid_shape(count: int, columns: int) -> tuple[int, int]:
    """`(rows, columns)` of a grid holding `count` panels, at most `columns` wide."""
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    columns = max(1, min(columns, count))
    return max(1, -(-count // columns)), columns


def save_figure(figure: Figure, path: str | os.PathLike | None, dpi: int = DEFAULT_DPI, colours: int | None = 256
                ) -> Figure:
    """Write `figure` as a PNG of `figure size x dpi` pixels at `path` (folders created); `None` writes nothing.

    Args:
        colours (`int`, *optional*): quantize to a palette of this many colours (2..256) to keep the file small
            (noisy photos and heat maps compress 3-5x better); `None` writes full RGBA.
    """
    if path is not None:
        if dpi < 1:
            raise ValueError(f"dpi must be a positive integer, got {dpi}")
        if colours is not None and not 2 <= colours <= 256:
            raise ValueError(f"colours must be in [2, 256] or None, got {colours}")
        folder = os.path.dirname(os.fspath(path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        if colours is None:
            figure.savefig(path, dpi=dpi, format="png")
        else:
            buffer = io.BytesIO()
            figure.savefig(buffer, dpi=dpi, format="png")
            with Image.open(buffer) as image:
                palette = image.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
            palette.save(path, format="PNG", optimize=True)
    return figure


def as_rgb_array(image, index: int = 0) -> np.ndarray:
    """A PIL image, `(H, W, 3)` / `(H, W)` numpy array or `(3, H, W)` tensor as a `uint8` `(H, W, 3)` array."""
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            return np.asarray(opened.convert("RGB"))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"images[{index}] as a tensor must be (3, H, W), got shape {tuple(image.shape)}")
        image = image.expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"images[{index}] as an array must be (H, W, 3), got shape {image.shape}")
        image = image[:, :, :3]
        if image.dtype != np.uint8:
            scale = 255.0 if image.max() <= 1.0 else 1.0
            image = np.clip(image * scale, 0, 255).round().astype(np.uint8)
        return image
    raise TypeError(f"images[{index}] must be a PIL image, a file path, a numpy array or a tensor, "
                    f"got {type(image).__name__}")


def as_image_list(images) -> list:
    """One image or a sequence of images as a non-empty list."""
    if isinstance(images, (Image.Image, str, os.PathLike)) or (
        isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 3
    ):
        return [images]
    images = list(images)
    if not images:
        raise ValueError("images is empty: give at least one image")
    return images


def valid_extent(mask: torch.Tensor) -> tuple[int, int]:
    """`(rows, columns)` of the valid top-left rectangle of a `(H, W)` mask (padding lies bottom/right)."""
    mask = mask.bool()
    return int(mask.any(1).sum()), int(mask.any(0).sum())


def grid_to_image(values: torch.Tensor, stride: tuple[float, float], resized_size: tuple[int, int],
                  original_size: tuple[int, int]) -> np.ndarray:
    """Bring a map over the valid cells of a feature/patch grid onto the original image (bilinear).

    Args:
        values (`torch.Tensor` of shape `(h_cells, w_cells)`): the map over the valid top-left cells only.
        stride (`(float, float)`): pixels of the resized (model input) image per cell, vertically and horizontally.
        resized_size (`(int, int)`): `(height, width)` of the image as the model saw it, without padding.
        original_size (`(int, int)`): `(height, width)` of the image as given.

    Returns:
        `np.ndarray` of shape `original_size`, float32. Cells are spread over `stride` pixels each, cut to the
        resized image (the last cells may cover some padding) and resized to the original size.
    """
    if values.ndim != 2:
        raise ValueError(f"values must be a (rows, columns) map, got shape {tuple(values.shape)}")
    cells_h, cells_w = values.shape
    covered = (max(1, round(cells_h * stride[0])), max(1, round(cells_w * stride[1])))
    spread = F.interpolate(values.float()[None, None].cpu(), size=covered, mode="bilinear", align_corners=False)
    spread = spread[..., : resized_size[0], : resized_size[1]]  # (1, 1, h, w)
    full = F.interpolate(spread, size=tuple(original_size), mode="bilinear", align_corners=False)
    return full[0, 0].numpy()


def show_heat_map(axis, image: np.ndarray, heat: np.ndarray, alpha: float = 0.6, cmap: str = "inferno") -> None:
    """The image, dimmed, with `heat` (same height and width, any scale) over it."""
    axis.imshow(image)
    axis.imshow(heat, alpha=alpha, cmap=cmap, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    axis.set_xlim(-0.5, image.shape[1] - 0.5)
    axis.set_ylim(image.shape[0] - 0.5, -0.5)


def draw_box(axis, box: Sequence[float], colour, text: str | None = None, linestyle: str = "-",
             linewidth: float = 1.5, fontsize: int = 7) -> None:
    """An absolute `(x0, y0, x1, y1)` box, with an optional label at its top-left corner."""
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in box)
    axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=linewidth,
                             linestyle=linestyle))
    if text:
        axis.text(x0, y0, text, fontsize=fontsize, color="black", va="bottom",
                  bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})


def head_mean(weights: torch.Tensor, head: int | None) -> torch.Tensor:
    """`(heads, ...)` attention weights -> the mean over heads (`head=None`, still rows summing to 1) or one head."""
    if head is None:
        return weights.float().mean(0)
    if not -weights.shape[0] <= head < weights.shape[0]:
        raise ValueError(f"head must be None or an index into the {weights.shape[0]} heads, got {head}")
    return weights[head].float()


def pick_layer(attentions: tuple | None, layer: int, name: str) -> torch.Tensor:
    """`attentions[layer]`, with errors that say what was missing."""
    if not attentions:
        raise ValueError(f"the model returned no {name}: it must support output_attentions=True")
    if not -len(attentions) <= layer < len(attentions):
        raise ValueError(f"layer must index one of the {len(attentions)} layers, got {layer}")
    return attentions[layer]
