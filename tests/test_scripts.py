"""The command-line entry points, run as a user would (on local folders only)."""

import subprocess
import sys
from pathlib import Path

import torch
import transformers

from conftest import padded_pair
from detrvilt import DetrForObjectDetection

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_convert_checkpoint_on_a_transformers_folder(tmp_path):
    config = transformers.DetrConfig(backbone="resnet18", use_timm_backbone=True, num_labels=4, d_model=32,
                                     encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
                                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=8)
    hf_model = transformers.DetrForObjectDetection(config).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "convert_checkpoint.py"), "--input_dir", str(tmp_path / "hf"),
         "--output_dir", str(tmp_path / "ours")],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr
    ours = DetrForObjectDetection.from_pretrained(tmp_path / "ours").eval()
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        expected = hf_model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        actual = ours(pixel_values, pixel_mask=pixel_mask)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=0)


def test_convert_checkpoint_help_explains_every_argument():
    result = subprocess.run([sys.executable, str(SCRIPTS / "convert_checkpoint.py"), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "--input_dir" in result.stdout and "Folder of a transformers" in result.stdout
    assert "--output_dir" in result.stdout and "Where to write" in result.stdout
