"""Shared fixtures: offline settings, tiny DETR configs and a padded batch of two different-size images."""

import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import detrvilt  # noqa: E402


def tiny_detr_config(**overrides) -> detrvilt.DetrConfig:
    """A DETR small enough for CPU tests: resnet18, d_model 32, 2 encoder and 3 decoder layers, 12 queries."""
    kwargs = dict(
        backbone="resnet18", d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=12, num_labels=5,
    )
    kwargs.update(overrides)
    return detrvilt.DetrConfig(**kwargs)


def padded_pair(sizes=((96, 128), (128, 80)), seed=0):
    """Two random images of different sizes, padded bottom/right into one batch with their pixel mask."""
    generator = torch.Generator().manual_seed(seed)
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    pixel_values = torch.zeros(len(sizes), 3, height, width)
    pixel_mask = torch.zeros(len(sizes), height, width, dtype=torch.long)
    for i, (h, w) in enumerate(sizes):
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
    return pixel_values, pixel_mask


def detection_labels():
    """Labels for a batch of two: three objects in the first image, none in the second."""
    return [
        {"class_labels": torch.tensor([0, 3, 1]),
         "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4], [0.2, 0.3, 0.1, 0.2], [0.7, 0.6, 0.4, 0.3]])},
        {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a process group of test processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fresh_accelerate_state():
    """accelerate's process-wide state reset before and after a test that builds Accelerators."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
