"""Remote code: a folder written by `save_for_hub` loads, runs and reproduces the saved model's outputs in a Python
process that cannot import detrvilt (no repo on sys.path, no editable-install finder), and still loads through the
installed classes after ``import detrvilt``."""

import json
import site
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForObjectDetection, AutoProcessor

import detrvilt
from conftest import padded_pair, tiny_detr_config
from detrvilt.data import default_vilt_processor
from detrvilt.hub import remote_code_auto_map, save_for_hub
from vilt_testing import tiny_vilt_config, vilt_batch

# Runs in the clean process: proves detrvilt is out of reach, then loads both folders with trust_remote_code only.
CLEAN_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys
    report = {"detrvilt_spec": importlib.util.find_spec("detrvilt") is not None}
    try:
        import detrvilt
        report["import_detrvilt"] = "succeeded"
    except ImportError:
        report["import_detrvilt"] = "ImportError"
    import torch
    from PIL import Image
    from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForObjectDetection,
                              AutoModelForVisualQuestionAnswering, AutoProcessor)
    root = sys.argv[1]
    inputs = torch.load(root + "/inputs.pt")
    outputs, classes = {}, {}
    detr = AutoModelForObjectDetection.from_pretrained(root + "/detr", trust_remote_code=True).eval()
    vilt = AutoModelForVisualQuestionAnswering.from_pretrained(root + "/vilt", trust_remote_code=True).eval()
    detr_processor = AutoImageProcessor.from_pretrained(root + "/detr", trust_remote_code=True)
    vilt_processor = AutoProcessor.from_pretrained(root + "/vilt", trust_remote_code=True)
    loaded = {"detr": detr, "vilt": vilt, "detr_processor": detr_processor, "vilt_processor": vilt_processor,
              "detr_auto_processor": AutoProcessor.from_pretrained(root + "/detr", trust_remote_code=True),
              "vilt_image_processor": AutoImageProcessor.from_pretrained(root + "/vilt", trust_remote_code=True),
              "detr_base": AutoModel.from_pretrained(root + "/detr", trust_remote_code=True),
              "vilt_config": AutoConfig.from_pretrained(root + "/vilt", trust_remote_code=True)}
    classes = {name: type(obj).__module__ + "." + type(obj).__name__ for name, obj in loaded.items()}
    image = Image.open(root + "/image.png")
    with torch.no_grad():
        out = detr(inputs["detr_pixel_values"], pixel_mask=inputs["detr_pixel_mask"])
        outputs["detr_logits"], outputs["detr_boxes"] = out.logits, out.pred_boxes
        outputs["vilt_logits"] = vilt(**inputs["vilt"]).logits
    outputs["detr_processed"] = detr_processor(image, return_tensors="pt")["pixel_values"]
    vilt_encoding = vilt_processor(images=image, text="a red square", return_tensors="pt")
    outputs["vilt_processed"] = vilt_encoding["pixel_values"]
    outputs["vilt_input_ids"] = vilt_encoding["input_ids"]
    torch.save(outputs, root + "/outputs.pt")
    report["classes"] = classes
    report["detrvilt_modules"] = sorted(m for m in sys.modules if m.startswith("detrvilt"))
    print("REPORT" + json.dumps(report))
""")


def run_without_detrvilt(args, cwd, timeout=240) -> subprocess.CompletedProcess:
    """Run `CLEAN_SCRIPT` in this interpreter with `-I -S` (no site hooks, so the editable install's finder is never
    installed; no current folder, no PYTHON* variables) and only the site-packages folders on `sys.path`."""
    site_dirs = [d for d in site.getsitepackages() if "site-packages" in d]
    bootstrap = f"import sys; sys.path.extend({site_dirs!r}); exec(compile(sys.argv.pop(1), 'clean', 'exec'))"
    env = {"HF_HOME": str(cwd / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-I", "-S", "-c", bootstrap, CLEAN_SCRIPT, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _image(path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
    return Image.open(path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    detr = detrvilt.DetrForObjectDetection(tiny_detr_config()).eval()
    vilt = detrvilt.ViltForQuestionAnswering(tiny_vilt_config()).eval()
    detr_processor = detrvilt.DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    vilt_processor = default_vilt_processor(shortest_edge=64)
    save_for_hub(detr, detr_processor, root / "detr")
    save_for_hub(vilt, vilt_processor, root / "vilt")
    pixel_values, pixel_mask = padded_pair()
    batch = vilt_batch()
    torch.save({"detr_pixel_values": pixel_values, "detr_pixel_mask": pixel_mask, "vilt": batch}, root / "inputs.pt")
    image = _image(root / "image.png")
    with torch.no_grad():
        out = detr(pixel_values, pixel_mask=pixel_mask)
        vilt_encoding = vilt_processor(images=image, text="a red square", return_tensors="pt")
        expected = {"detr_logits": out.logits, "detr_boxes": out.pred_boxes, "vilt_logits": vilt(**batch).logits,
                    "detr_processed": detr_processor(image, return_tensors="pt")["pixel_values"],
                    "vilt_processed": vilt_encoding["pixel_values"], "vilt_input_ids": vilt_encoding["input_ids"]}
    return root, expected


def test_saved_folders_hold_auto_map_and_the_modeling_files(saved):
    root, _ = saved
    detr_config = json.loads((root / "detr" / "config.json").read_text())
    assert detr_config["auto_map"] == {"AutoConfig": "configuration_detr.DetrConfig",
                                       "AutoModel": "modeling_detr.DetrModel",
                                       "AutoModelForObjectDetection": "modeling_detr.DetrForObjectDetection"}
    assert {"configuration_detr.py", "modeling_detr.py", "backbone_detr.py", "loss_detr.py",
            "image_processing_detr.py"} <= {p.name for p in (root / "detr").iterdir()}
    preprocessor = json.loads((root / "detr" / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"]["AutoImageProcessor"] == "image_processing_detr.DetrviltDetrImageProcessor"
    vilt_config = json.loads((root / "vilt" / "config.json").read_text())
    assert vilt_config["auto_map"]["AutoModelForVisualQuestionAnswering"] == "heads_vilt.ViltForQuestionAnswering"
    processor = json.loads((root / "vilt" / "processor_config.json").read_text())
    assert processor["auto_map"]["AutoProcessor"] == "processing_vilt.DetrviltViltProcessor"
    assert processor["image_processor"]["auto_map"]["AutoImageProcessor"] == (
        "image_processing_vilt.DetrviltViltImageProcessor")
    vilt_files = {p.name for p in (root / "vilt").iterdir()}
    assert {"heads_vilt.py", "modeling_vilt.py", "embeddings_vilt.py", "wpa_vilt.py", "timm_vilt.py",
            "processing_vilt.py", "image_processing_vilt.py", "configuration_vilt.py"} <= vilt_files
    # The model object keeps no trace of the save.
    assert "auto_map" not in detrvilt.DetrForObjectDetection(tiny_detr_config()).config.to_dict()


def test_a_process_without_detrvilt_loads_and_reproduces_the_saved_models(saved):
    root, expected = saved
    result = run_without_detrvilt([str(root)], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["detrvilt_spec"] is False and report["import_detrvilt"] == "ImportError"
    assert report["detrvilt_modules"] == []
    for name, cls in report["classes"].items():
        assert cls.startswith("transformers_modules."), (name, cls)
    assert report["classes"]["detr"].endswith("modeling_detr.DetrForObjectDetection")
    assert report["classes"]["detr_base"].endswith("modeling_detr.DetrModel")
    assert report["classes"]["vilt"].endswith("heads_vilt.ViltForQuestionAnswering")
    assert report["classes"]["vilt_processor"].endswith("processing_vilt.DetrviltViltProcessor")
    assert report["classes"]["detr_auto_processor"].endswith("image_processing_detr.DetrviltDetrImageProcessor")
    assert report["classes"]["vilt_image_processor"].endswith("image_processing_vilt.DetrviltViltImageProcessor")
    actual = torch.load(root / "outputs.pt")
    assert set(actual) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, atol=1e-6, rtol=0, msg=name)


def test_with_detrvilt_imported_the_installed_classes_load_the_folder(saved):
    root, expected = saved
    model = AutoModelForObjectDetection.from_pretrained(root / "detr").eval()
    assert type(model) is detrvilt.DetrForObjectDetection
    assert type(AutoImageProcessor.from_pretrained(root / "detr")) is detrvilt.DetrviltDetrImageProcessor
    assert type(AutoProcessor.from_pretrained(root / "vilt")) is detrvilt.DetrviltViltProcessor
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values, pixel_mask=pixel_mask).logits, expected["detr_logits"])


@pytest.mark.parametrize("model_class, key", [
    (detrvilt.ViltForImagesAndTextClassification, "AutoModelForSequenceClassification"),
    (detrvilt.ViltForPreTraining, "AutoModelForPreTraining"),
])
def test_auto_map_names_the_saved_task_class(model_class, key):
    two_images = model_class is detrvilt.ViltForImagesAndTextClassification
    config = tiny_vilt_config(num_images=2, modality_type_vocab_size=3) if two_images else tiny_vilt_config()
    auto_map = remote_code_auto_map(model_class(config))
    assert auto_map[key] == f"heads_vilt.{model_class.__name__}"
    assert auto_map["AutoConfig"] == "configuration_vilt.ViltConfig"


def test_save_for_hub_rejects_foreign_objects(tmp_path):
    with pytest.raises(TypeError, match="model must be"):
        save_for_hub(torch.nn.Linear(2, 2), None, tmp_path)
    with pytest.raises(TypeError, match="processor must be"):
        save_for_hub(detrvilt.DetrForObjectDetection(tiny_detr_config()), object(), tmp_path)
