"""The wheel: what ``pip install detrvilt`` (from an index, ``git+...`` or a built wheel) gets must work without the
repository. The test builds the wheel from a copy of the packaged files, installs it with ``--no-deps`` into a fresh
virtual environment whose other packages come from the test environment (a ``.pth`` line, after the new
environment's own site-packages, so the wheel's detrvilt wins), and from a folder outside the repository renders a
model card from the packaged templates, loads an evaluation metric, saves and reloads a model, and imports the Space
app. Slow tier (about a minute): building and installing a wheel."""

import json
import shutil
import site
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What setup.cfg packages (and nothing else: a file read at run time from elsewhere would be missing).
PACKAGED = ("setup.cfg", "pyproject.toml", "README.md", "src", "modeling", "hub_cards")

SCRIPT = textwrap.dedent("""
    import json, sys
    import detrvilt
    from detrvilt.evaluation import load_metric
    from detrvilt.hub import CARD_TEMPLATES, render_model_card, save_for_hub
    report = {"detrvilt_file": detrvilt.__file__, "templates": sorted(p.name for p in CARD_TEMPLATES.iterdir())}
    config = detrvilt.DetrConfig(num_labels=3, backbone="resnet18", d_model=32, encoder_layers=1, decoder_layers=1,
                                 encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                 decoder_ffn_dim=64, num_queries=5, id2label={0: "circle", 1: "square", 2: "triangle"})
    card = render_model_card(config, "someone/detr-wheel", {"learning_rate": 1e-4}, {"map": 0.25})
    report["card_has_sections"] = all(h in str(card) for h in ("## How to load it", "## Evaluation", "Carion"))
    metric = load_metric("coco_map")
    result = metric.compute(predictions=[{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [1]}],
                            references=[{"boxes": [[0, 0, 10, 10]], "labels": [1]}])
    report["map"] = result["map"]
    save_for_hub(detrvilt.DetrForObjectDetection(config), detrvilt.DetrImageProcessor(), "saved")
    from transformers import AutoModelForObjectDetection
    report["loaded"] = type(AutoModelForObjectDetection.from_pretrained("saved")).__module__
    import detrvilt.space
    report["space_app"] = detrvilt.space.__file__
    print("REPORT" + json.dumps(report))
""")


@pytest.mark.slow
def test_the_built_wheel_works_outside_the_repository(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in PACKAGED:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")}
                                            if (ROOT / name).is_dir() else {}))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("detrvilt-*.whl")

    environment = tmp_path / "env"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    new_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    test_site = [d for d in site.getsitepackages() if "site-packages" in d]
    (new_site / "test_environment.pth").write_text("\n".join(test_site) + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, text=True, timeout=300)

    outside = tmp_path / "outside"
    outside.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf_home"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([str(python), "-c", SCRIPT], cwd=outside, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["detrvilt_file"].startswith(str(new_site)), report["detrvilt_file"]
    assert {"detr.md", "vilt.md"} <= set(report["templates"])
    assert report["card_has_sections"] is True
    assert report["map"] == pytest.approx(1.0)
    assert report["loaded"] == "detrvilt.modeling.detr.modeling_detr"
    assert report["space_app"].startswith(str(new_site))
