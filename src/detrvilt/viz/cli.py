"""The options and the work of `scripts/visualize.py`: pictures of any saved DETR or ViLT folder on image files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .common import DEFAULT_DPI

DETR_KINDS = ("predictions", "encoder_attention", "decoder_attention", "query_boxes")
VILT_KINDS = ("word_patch_alignment",)


@dataclass
class VisualizeArguments:
    model_dir: str = field(metadata={"help": "A saved detrvilt model folder (config.json, weights and processor "
                                             "files): a DETR (DetrForObjectDetection) or a ViLT (any task class)."})
    images: list[str] = field(metadata={"help": "One or more image files (any format PIL reads)."})
    output_dir: str = field(default="pictures", metadata={"help": "Folder for the PNG files (created)."})
    kinds: list[str] = field(default_factory=list, metadata={
        "help": f"Pictures to draw. DETR: {', '.join(DETR_KINDS)}; ViLT: {', '.join(VILT_KINDS)}. Default: every "
                "kind the model supports."})
    points: list[str] = field(default_factory=list, metadata={
        "help": "Encoder-attention reference points as 'x,y' in pixels of each original image (the same points for "
                "every image). Default: the centres of the best detections (a 2 x 2 grid without any)."})
    captions: list[str] = field(default_factory=list, metadata={
        "help": "ViLT: the caption of each image, or one caption for all images (required for ViLT)."})
    threshold: float = field(default=0.7, metadata={
        "help": "DETR: draw detections whose score (best class probability other than 'no object') is above it."})
    max_objects: int = field(default=6, metadata={"help": "DETR: at most this many objects in the decoder picture."})
    queries: list[int] = field(default_factory=list, metadata={
        "help": "DETR query_boxes: the object queries to draw (default: the first 20)."})
    layer: int = field(default=-1, metadata={"help": "Attention layer to draw (-1: the last)."})
    head: int | None = field(default=None, metadata={"help": "One attention head to draw (default: mean of heads)."})
    dpi: int = field(default=DEFAULT_DPI, metadata={"help": "PNG resolution (a 2.5-inch panel is 2.5 x dpi pixels)."})
    device: str = field(default="cpu", metadata={"help": "Torch device to run the model on (cpu, cuda, cuda:1, ...)."})


def _parse_points(points: list[str]) -> list[tuple[float, float]]:
    parsed = []
    for point in points:
        parts = point.split(",")
        try:
            parsed.append((float(parts[0]), float(parts[1])) if len(parts) == 2 else None)
        except ValueError:
            parsed.append(None)
        if parsed[-1] is None:
            raise ValueError(f"points must be 'x,y' pairs of numbers, got {point!r}")
    return parsed


def _check_kinds(kinds: list[str], family: str) -> list[str]:
    supported = DETR_KINDS if family == "detr" else VILT_KINDS
    kinds = list(kinds) or list(supported)
    unknown = [kind for kind in kinds if kind not in supported]
    if unknown:
        raise ValueError(f"kinds {unknown} do not apply to a {family.upper()} model; choose from {list(supported)}")
    return kinds


def make_pictures(args: VisualizeArguments) -> list[str]:
    """Load `args.model_dir`, draw the chosen kinds of pictures for `args.images`; returns the written paths."""
    from .detr.pictures import (
        default_reference_points,
        detect,
        draw_decoder_attention,
        draw_encoder_attention,
        draw_predictions,
        run_detr,
    )
    from .detr.query_boxes import draw_query_box_distribution
    from .loading import load_model_and_processor
    from .vilt.alignment import draw_word_patch_alignment

    missing = [path for path in args.images if not os.path.isfile(path)]
    if not args.images or missing:
        raise ValueError(f"images must be existing image files, missing: {missing or 'no images given'}")
    points = _parse_points(args.points)
    model, processor, family = load_model_and_processor(args.model_dir, args.device)
    kinds = _check_kinds(args.kinds, family)
    captions = args.captions * len(args.images) if len(args.captions) == 1 else args.captions
    if family == "vilt" and len(captions) != len(args.images):
        raise ValueError(f"captions must be one per image ({len(args.images)}) or one for all, got "
                         f"{len(args.captions)}")
    os.makedirs(args.output_dir, exist_ok=True)
    stems = [os.path.splitext(os.path.basename(path))[0] for path in args.images]
    written = []

    def out(name: str) -> str:
        written.append(os.path.join(args.output_dir, name))
        return written[-1]

    if family == "vilt":
        for path, stem, caption in zip(args.images, stems, captions, strict=True):
            draw_word_patch_alignment(model, processor, path, caption, out(f"{stem}_word_patch_alignment.png"),
                                      args.layer, args.head, dpi=args.dpi)
        return written

    if "predictions" in kinds:
        draw_predictions(model, processor, args.images, out("predictions.png"), args.threshold, dpi=args.dpi)
    for path, stem in zip(args.images, stems, strict=True):
        if "encoder_attention" in kinds or "decoder_attention" in kinds:
            inference = run_detr(model, processor, [path])
        if "encoder_attention" in kinds:
            chosen = points or default_reference_points(detect(inference, processor, args.threshold)[0],
                                                        inference.original_size(0))
            draw_encoder_attention(model, processor, None, chosen, out(f"{stem}_encoder_attention.png"), args.layer,
                                   args.head, dpi=args.dpi, inference=inference)
        if "decoder_attention" in kinds:
            draw_decoder_attention(model, processor, None, out(f"{stem}_decoder_attention.png"), args.threshold,
                                   args.max_objects, args.layer, args.head, dpi=args.dpi, inference=inference)
    if "query_boxes" in kinds:
        draw_query_box_distribution(model, processor, args.images, out("query_boxes.png"), args.queries or None,
                                    dpi=args.dpi)
    return written
