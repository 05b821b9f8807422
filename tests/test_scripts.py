"""Command-line entry points (Hub scripts, panoptic training): every argument has a help text that `--help` shows.
(What the scripts do is tested in test_conversion_official.py, test_hub_cards.py, test_onnx.py and
test_panoptic_data.py.)"""

import dataclasses
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import convert_checkpoint  # noqa: E402
import export_onnx  # noqa: E402
import push_to_hub  # noqa: E402
import train_detr_panoptic  # noqa: E402


@pytest.mark.parametrize("script, arguments", [
    (convert_checkpoint, convert_checkpoint.ConvertArguments),
    (push_to_hub, push_to_hub.PushArguments),
    (export_onnx, export_onnx.ExportArguments),
    (train_detr_panoptic, train_detr_panoptic.PanopticArguments),
])
def test_help_explains_every_argument(script, arguments, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    fields = dataclasses.fields(arguments)
    assert len(fields) >= 2
    for f in fields:
        help_text = f.metadata.get("help", "")
        assert help_text, f"--{f.name} has no help"
        assert f"--{f.name}" in text and " ".join(help_text.split()[:4]) in text, f.name
