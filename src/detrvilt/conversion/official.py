"""Loading the official repositories' checkpoints (facebookresearch/detr ``.pth``, dandelin/ViLT ``.ckpt``) safely,
and the helpers both models' converters share (`detr/from_official.py`, `vilt/from_official.py`).

Architecture numbers are read from tensor shapes; what shapes cannot tell (attention heads, dilation, loss weights,
ViLT's ``max_image_len``) comes from the checkpoint's saved arguments when present, else the papers' defaults, and
can be overridden.
"""

from __future__ import annotations

import argparse
import re
from collections import OrderedDict

import torch


def load_official_checkpoint(path: str) -> dict:
    """Load an official checkpoint file with `torch.load(weights_only=True)`: tensors and plain containers only.

    DETR's training arguments (`argparse.Namespace`) are allowed as they are; any other pickled class (Lightning's
    hyper-parameter `AttributeDict`) is read as an `OrderedDict` instead of being imported, so that no code of the
    checkpoint runs and neither DETR's nor ViLT's repository (nor Lightning) is needed.
    """
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    stand_ins = [(argparse.Namespace, "argparse.Namespace")] if "argparse.Namespace" in unsafe else []
    stand_ins += [(OrderedDict, name) for name in unsafe if name != "argparse.Namespace"]
    with torch.serialization.safe_globals(stand_ins):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a checkpoint dictionary, got {type(checkpoint).__name__}")
    return checkpoint


def saved_settings(saved) -> dict:
    """The saved training settings (a Namespace or a mapping, possibly absent) as a plain dict."""
    if saved is None:
        return {}
    return dict(saved) if isinstance(saved, dict) else dict(vars(saved))


def count_indexed(state_dict: dict, pattern: str) -> int:
    """How many numbered blocks `pattern` (one group: the index) finds among the keys: the largest index + 1."""
    found = {int(m.group(1)) for key in state_dict for m in [re.match(pattern, key)] if m}
    return max(found) + 1 if found else 0


__all__ = ["count_indexed", "load_official_checkpoint", "saved_settings"]
