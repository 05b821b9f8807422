"""ViLT's image processor (pixelbert resize, RandAugment), tokenizer default and processor save/load/Auto."""

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F
from transformers import AutoImageProcessor, AutoProcessor
from transformers import ViltImageProcessor as TransformersViltImageProcessor

import detrvilt
from detrvilt.data import default_vilt_processor, default_vilt_tokenizer
from detrvilt.modeling.vilt.image_processing_vilt import (
    RANDAUGMENT_OP_NAMES,
    RANDAUGMENT_OPS,
    DetrviltViltImageProcessor,
    pixelbert_size,
    rand_augment,
)

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photos():
    return [Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS]


def test_parity_with_transformers_on_photographs():
    """Done means 1: same sizes, pixel_values within 1e-4, same pixel_mask (transformers' torchvision backend)."""
    images = photos()
    ours = DetrviltViltImageProcessor()(images)
    theirs = TransformersViltImageProcessor()(images, return_tensors="pt")
    assert ours["pixel_values"].shape == theirs["pixel_values"].shape
    assert (ours["pixel_values"] - theirs["pixel_values"]).abs().max().item() < 1e-4
    assert torch.equal(ours["pixel_mask"], theirs["pixel_mask"])
    for image in images:  # one at a time: the unpadded size
        a = DetrviltViltImageProcessor()(image)["pixel_values"]
        b = TransformersViltImageProcessor()(image, return_tensors="pt")["pixel_values"]
        assert a.shape == b.shape


@pytest.mark.parametrize("size,expected", [((480, 640), (384, 512)), ((300, 451), (384, 576)), ((100, 400), (160, 608)),
                                           ((640, 480), (512, 384)), ((512, 512), (384, 384))])
def test_pixelbert_size(size, expected):
    height, width = pixelbert_size(*size)
    assert (height, width) == expected
    assert height % 32 == 0 and width % 32 == 0 and max(height, width) <= 639


def test_grayscale_rgba_palette_exif_become_rgb():
    processor = DetrviltViltImageProcessor()
    gray = Image.fromarray(np.full((64, 96), 128, np.uint8))
    rgba = Image.new("RGBA", (96, 64), (255, 0, 0, 0))  # fully transparent: white
    palette = gray.convert("P")
    rotated = Image.new("RGB", (96, 64), (10, 20, 30))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees: upright it is 96 high, 64 wide
    import io
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", exif=exif.tobytes())
    buffer.seek(0)
    out = processor([gray, rgba, palette, Image.open(buffer)], do_pad=False)["pixel_values"]
    assert all(image.shape[0] == 3 for image in out)
    assert torch.allclose(out[1], torch.ones_like(out[1]), atol=1e-5)  # white after compositing
    assert out[3].shape[-2] > out[3].shape[-1]  # turned upright


def test_padding_and_mask():
    processor = DetrviltViltImageProcessor()
    batch = processor([np.zeros((100, 200, 3), np.uint8), np.zeros((200, 100, 3), np.uint8)])
    assert batch["pixel_values"].shape == (2, 3, 608, 608)
    assert batch["pixel_mask"][0].sum() == 320 * 608 and batch["pixel_mask"][0, 320:].sum() == 0
    assert (batch["pixel_values"][0, :, 320:] == 0).all()
    assert torch.allclose(batch["pixel_values"][0, :, :320], torch.full((3, 320, 608), -1.0))  # black -> -1


def test_randaugment_op_list_excludes_invert_and_cutout():
    """Done means 3: the op list (the official ViLT list without Invert and Cutout)."""
    assert "Invert" not in RANDAUGMENT_OP_NAMES and not any("Cutout" in n for n in RANDAUGMENT_OP_NAMES)
    assert len(RANDAUGMENT_OP_NAMES) == 14 and len(set(RANDAUGMENT_OP_NAMES)) == 14
    seen = set()
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    for _ in range(100):
        seen.update(rand_augment(image, generator=generator, return_ops=True)[1])
    assert seen == set(RANDAUGMENT_OP_NAMES)


def _has_constant_block(image: torch.Tensor, block: int = 16) -> bool:
    patches = image.float().unfold(1, block, 4).unfold(2, block, 4)  # (3, nh, nw, block, block)
    spread = patches.amax(dim=(-1, -2)) - patches.amin(dim=(-1, -2))
    return bool((spread.amax(0) == 0).any())


def test_randaugment_pixel_statistics_no_invert_no_cutout():
    """Done means 3 by pixel statistics: no output is the inverted input, none has a constant (cut-out) block inside."""
    generator = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, 160, 160), dtype=torch.uint8, generator=generator)
    inverted = 255 - image
    for _, low, high, _, op in RANDAUGMENT_OPS:
        out = F.pil_to_tensor(op(F.to_pil_image(image), 9 / 30 * (high - low) + low))
        assert (out == inverted).float().mean() < 0.9
        assert not _has_constant_block(out[:, 48:-48, 48:-48])
    for _ in range(60):
        out = rand_augment(image, generator=generator)
        assert (out == inverted).float().mean() < 0.9
        assert not _has_constant_block(out[:, 48:-48, 48:-48])


def test_randaugment_shape_dtype_and_determinism():
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    a = rand_augment(image, generator=torch.Generator().manual_seed(3))
    b = rand_augment(image, generator=torch.Generator().manual_seed(3))
    assert a.shape == image.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    processor = DetrviltViltImageProcessor(do_augment=True)
    x = processor(photos()[:2], generator=torch.Generator().manual_seed(5))["pixel_values"]
    y = processor(photos()[:2], generator=torch.Generator().manual_seed(5))["pixel_values"]
    z = DetrviltViltImageProcessor()(photos()[:2])["pixel_values"]
    assert torch.equal(x, y) and x.shape == z.shape and not torch.equal(x, z)


def test_default_tokenizer_is_bert_uncased():
    tokenizer = default_vilt_tokenizer()
    assert len(tokenizer) == 30522 and tokenizer.is_fast and tokenizer.model_max_length == 40
    ids = tokenizer("Hello World")["input_ids"]
    assert ids == [101, 7592, 2088, 102]


def test_processor_call_save_load_and_auto(tmp_path):
    processor = default_vilt_processor()
    batch = processor(images=photos()[:2], text=["a woman in a space suit", "a cup of coffee"])
    assert batch["input_ids"].shape == (2, 40) and batch["pixel_values"].shape[:2] == (2, 3)
    with pytest.raises(ValueError, match="one image per text"):
        processor(images=photos()[:1], text=["a", "b"])
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, detrvilt.ViltProcessor)
    assert isinstance(loaded.image_processor, detrvilt.ViltImageProcessor)
    again = loaded(images=photos()[:2], text=["a woman in a space suit", "a cup of coffee"])
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    config = detrvilt.ViltConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.save_pretrained(tmp_path)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), DetrviltViltImageProcessor)


def test_benchmark_script_runs_and_checks_parity(capsys):
    """Done means 7 (the script; its numbers are measured separately): it runs, checks parity, prints the table."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_vilt_preprocessing.py"
    spec = importlib.util.spec_from_file_location("bench_vilt_preprocessing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--batch-sizes", "2", "--repeats", "1", "--warmup", "0"])
    output = capsys.readouterr().out
    assert "ours pairs/s" in output and "transformers pairs/s" in output
