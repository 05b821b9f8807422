"""From a local checkpoint (a transformers folder or an official repository's file) to a detrvilt Hub folder: model
with remote code, processor and model card. What ``scripts/convert_checkpoint.py`` calls."""

from __future__ import annotations

import json
from pathlib import Path

import transformers

from ..modeling.detr import DetrConfig
from ..modeling.detr.image_processing_detr import DetrviltDetrImageProcessor
from ..modeling.vilt.image_processing_vilt import DetrviltViltImageProcessor
from ..modeling.vilt.processing_vilt import DetrviltViltProcessor
from .detr.from_official import convert_official_detr
from .detr.from_transformers import convert_transformers_detr
from .official import load_official_checkpoint
from .vilt.from_official import convert_official_vilt
from .vilt.from_transformers import convert_transformers_vilt

SOURCES = ("auto", "transformers", "official_detr", "official_vilt")


def detect_source(path: str | Path) -> str:
    """`"transformers"` for a folder with a config.json, `"official_detr"` for a ``.pth`` file, `"official_vilt"`
    for a ``.ckpt`` file."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        return "transformers"
    if path.is_file() and path.suffix == ".pth":
        return "official_detr"
    if path.is_file() and path.suffix == ".ckpt":
        return "official_vilt"
    raise ValueError(f"input must be a transformers folder (with config.json), a DETR .pth or a ViLT .ckpt, got {path}")


def _transformers_model(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or []
    if config.get("model_type") not in ("detr", "vilt") or not architectures:
        raise ValueError(f"{folder}: expected a transformers DETR or ViLT folder with `architectures`, got model_type "
                         f"{config.get('model_type')!r}, architectures {architectures}")
    return getattr(transformers, architectures[0]).from_pretrained(folder).eval()


def _tokenizer(folder: Path | None):
    """The folder's BERT tokenizer if it has one, else bert-base-uncased's offline vocabulary."""
    if folder is not None and folder.is_dir() and any((folder / n).is_file() for n in ("tokenizer.json", "vocab.txt")):
        return transformers.BertTokenizerFast.from_pretrained(folder, model_max_length=40)
    from ..data.vilt.tokenizer import default_vilt_tokenizer

    return default_vilt_tokenizer()


def build_processor(model, source_folder: Path | None = None):
    """The processor of a converted model: the resize of the source folder's processor when it has one (DETR: shortest
    / longest edge; ViLT: shortest edge), else the papers' (800 / 1333; 384)."""
    saved = {}
    if source_folder is not None and (source_folder / "preprocessor_config.json").is_file():
        saved = json.loads((source_folder / "preprocessor_config.json").read_text()).get("size", {}) or {}
    if isinstance(model.config, DetrConfig):
        size = {"shortest_edge": saved.get("shortest_edge", 800), "longest_edge": saved.get("longest_edge", 1333)}
        return DetrviltDetrImageProcessor(size=size, num_labels=model.config.num_labels)
    image_processor = DetrviltViltImageProcessor(shortest_edge=saved.get("shortest_edge", 384))
    return DetrviltViltProcessor(image_processor, _tokenizer(source_folder))


def convert_checkpoint(input_path: str | Path, source: str = "auto", config_overrides: dict | None = None):
    """Load and convert a local checkpoint.

    Args:
        input_path: a transformers folder (``facebook/detr-resnet-50``, ``dandelin/vilt-b32-mlm`` /
            ``-finetuned-vqa`` / ``-finetuned-nlvr2`` / ``-finetuned-coco`` as downloaded), a facebookresearch/detr
            ``.pth`` or a dandelin/ViLT ``.ckpt``.
        source: one of `SOURCES`; `"auto"` decides by `detect_source`.
        config_overrides: config fields for the official checkpoints (e.g. `id2label`).

    Returns:
        `(model, processor, source)`: the detrvilt model in eval mode and its processor.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    input_path = Path(input_path)
    source = detect_source(input_path) if source == "auto" else source
    overrides = dict(config_overrides or {})
    if source == "transformers":
        hf_model = _transformers_model(input_path)
        converter = convert_transformers_detr if hf_model.config.model_type == "detr" else convert_transformers_vilt
        model = converter(hf_model)
        return model, build_processor(model, input_path), source
    checkpoint = load_official_checkpoint(str(input_path))
    model = (convert_official_detr if source == "official_detr" else convert_official_vilt)(checkpoint, **overrides)
    return model, build_processor(model), source


__all__ = ["SOURCES", "build_processor", "convert_checkpoint", "detect_source"]
