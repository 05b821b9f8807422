"""Shared helpers of the ViLT tests: tiny configs, a padded batch of two different-size images with texts of
different lengths, random transformers models and a comparison that maps transformers' image tokens onto ours."""

import contextlib
from unittest import mock

import torch
import transformers

from detrvilt import ViltConfig

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
            max_position_embeddings=16, image_size=128, patch_size=32)
FULL = {}  # transformers' defaults are ViLT-B/32: 768 wide, 12 blocks, 12 heads, 30522 words, 40 tokens, 384 / 32

# Image 0 is 64 x 128 pixels (2 x 4 patches), image 1 is 96 x 50 (3 x 2 patches: its last column covers 18 real
# pixels), padded together to 96 x 128 (3 x 4 patches).
SIZES = ((64, 128), (96, 50))


def tiny_vilt_config(**overrides) -> ViltConfig:
    kwargs = dict(TINY, num_labels=5)
    kwargs.update(overrides)
    return ViltConfig(**kwargs)


def vilt_batch(sizes=SIZES, text_lengths=(7, 5), vocab_size=99, seed=0, padded_size=None):
    """A dict of model inputs: images padded bottom/right (pixel_mask 1 on real pixels) and right-padded texts
    `[CLS]=1, words, [SEP]=2, [PAD]=0` of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    height, width = padded_size or (-(-height // 32) * 32, -(-width // 32) * 32)
    pixel_values = torch.zeros(len(sizes), 3, height, width)
    pixel_mask = torch.zeros(len(sizes), height, width, dtype=torch.long)
    for i, (h, w) in enumerate(sizes):
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
    text_length = max(text_lengths)
    input_ids = torch.zeros(len(text_lengths), text_length, dtype=torch.long)
    attention_mask = torch.zeros(len(text_lengths), text_length, dtype=torch.long)
    for i, length in enumerate(text_lengths):
        input_ids[i, :length] = torch.randint(3, vocab_size, (length,), generator=generator)
        input_ids[i, 0], input_ids[i, length - 1] = 1, 2
        attention_mask[i, :length] = 1
    return dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, pixel_mask=pixel_mask)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, std: float | None = None) -> torch.nn.Module:
    """Give every parameter a random value (transformers leaves the image [CLS] and positions at zero): weights and
    biases N(0, std) with std = 0.5 / sqrt(hidden_size) (0.09 tiny, 0.018 full, so that activations stay of
    order one over 12 blocks), LayerNorm scales N(1, 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    std = std if std is not None else 0.5 / model.config.hidden_size**0.5
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            noise = torch.randn(parameter.shape, generator=generator) * std
            if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                noise += 1.0
            parameter.copy_(noise)
    return model


def hf_vilt(cls_name: str, config: dict, seed: int = 0):
    """A transformers ViLT model of class `cls_name` with random weights, in eval mode."""
    kwargs = dict(config)
    if cls_name == "ViltForImagesAndTextClassification":
        kwargs.update(num_images=2, modality_type_vocab_size=3)
    kwargs.setdefault("num_labels", 5)
    model = getattr(transformers, cls_name)(transformers.ViltConfig(**kwargs))
    return randomize_(model, seed).eval()


def _first_samples(input, num_samples, replacement=False, generator=None, out=None):
    return torch.arange(num_samples, device=input.device) % input.shape[-1]


@contextlib.contextmanager
def unshuffled_transformers_patches():
    """transformers' ViLT draws its image tokens with `torch.multinomial` even when it keeps them all (a random
    order of the valid patches, then random padding patches). Make those draws take the first ones: valid patches
    in grid order, then the first padding patches."""
    with mock.patch("torch.multinomial", _first_samples):
        yield


def valid_patch_rows(pixel_mask: torch.Tensor, patch_size: int = 32) -> list[torch.Tensor]:
    """For each image, the grid indices of its valid patches, in grid order."""
    valid = pixel_mask[:, ::patch_size, ::patch_size].flatten(1) != 0
    return [row.nonzero().flatten() for row in valid]


def assert_same_sequence(ours: torch.Tensor, theirs: torch.Tensor, attention_mask: torch.Tensor,
                         pixel_mask: torch.Tensor, atol: float = 1e-4):
    """Compare `(B, T + 1 + L, D)` sequences on the tokens that carry information: the valid text tokens and the
    image [CLS] directly, each image's valid patches in our full grid against the first tokens of transformers'
    (unshuffled) selection. (Outputs at padding positions have no meaning: transformers computes values there,
    ours are zero.)"""
    text = attention_mask.bool()
    length = text.shape[1]
    torch.testing.assert_close(ours[:, :length][text], theirs[:, :length][text], atol=atol, rtol=0)
    torch.testing.assert_close(ours[:, length], theirs[:, length], atol=atol, rtol=0)  # the image [CLS]
    for i, index in enumerate(valid_patch_rows(pixel_mask)):
        torch.testing.assert_close(ours[i, length + 1 + index], theirs[i, length + 1:length + 1 + len(index)],
                                   atol=atol, rtol=0)
