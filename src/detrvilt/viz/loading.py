"""Load any saved detrvilt model folder (DETR or ViLT, any task head) with its processor, for the pictures."""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoProcessor

DETR_MODEL_TYPE = "detrvilt_detr"
VILT_MODEL_TYPE = "detrvilt_vilt"


def load_model_and_processor(model_dir: str, device: str = "cpu"):
    """The model saved in `model_dir` (the class named in its `config.json` `architectures`), in eval mode on
    `device`, and its processor.

    DETR folders load their image processor. ViLT folders load their `ViltProcessor`; a folder saved without a
    tokenizer gets its image processor with the offline BERT uncased tokenizer
    (`detrvilt.data.default_vilt_processor`).

    Returns:
        `(model, processor, family)` with `family` `"detr"` or `"vilt"`.
    """
    import detrvilt  # registers the Auto classes

    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ValueError(f"model_dir must be a saved model folder with a config.json, got {model_dir!r}")
    config = AutoConfig.from_pretrained(model_dir)
    families = {DETR_MODEL_TYPE: "detr", VILT_MODEL_TYPE: "vilt"}
    if config.model_type not in families:
        raise ValueError(f"model_dir holds a {config.model_type!r} model; the pictures need {sorted(families)}")
    family = families[config.model_type]
    default = "DetrForObjectDetection" if family == "detr" else "ViltModel"
    name = (config.architectures or [default])[0]
    model_class = getattr(detrvilt, name, None)
    if model_class is None:
        raise ValueError(f"{model_dir}/config.json names architecture {name!r}, which detrvilt does not export")
    model = model_class.from_pretrained(model_dir).to(torch.device(device)).eval()
    if family == "detr":
        return model, AutoImageProcessor.from_pretrained(model_dir), family
    try:
        processor = AutoProcessor.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError):
        processor = None
    if not hasattr(processor, "tokenizer"):  # no tokenizer saved: the image processor alone came back, or nothing
        from ..data.vilt.tokenizer import default_vilt_processor

        image_processor = AutoImageProcessor.from_pretrained(model_dir)
        processor = default_vilt_processor()
        processor.image_processor = image_processor
    return model, processor, family
