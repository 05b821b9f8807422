"""Remote code on every save path: folders written by `save_for_hub`, by plain `save_pretrained`, by `push_to_hub`
(through a local stand-in for the Hub), by `Trainer.save_model()` and Trainer checkpoints, and by the training
recipes' `save_trained`, load, run and reproduce the saved model's outputs in a Python process that cannot import
detrvilt (`clean_process.py`), and still load through the installed classes after ``import detrvilt``."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from clean_process import run_without_detrvilt
from conftest import padded_pair, tiny_detr_config
from huggingface_hub import ModelCard, ModelCardData
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForObjectDetection, AutoProcessor, Trainer, TrainingArguments
from vilt_testing import tiny_vilt_config, vilt_batch

import detrvilt
from detrvilt.data import default_vilt_processor
from detrvilt.hub import remote_code_auto_map, save_auto_classes, save_for_hub
from detrvilt.training.recipes import save_trained

# Loads both save_for_hub folders with trust_remote_code only, runs them and their processors.
SAVE_FOR_HUB_SCRIPT = """
    import torch
    from PIL import Image
    from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForObjectDetection,
                              AutoModelForVisualQuestionAnswering, AutoProcessor)
    root = sys.argv[1]
    inputs = torch.load(root + "/inputs.pt")
    outputs = {}
    detr = AutoModelForObjectDetection.from_pretrained(root + "/detr", trust_remote_code=True).eval()
    vilt = AutoModelForVisualQuestionAnswering.from_pretrained(root + "/vilt", trust_remote_code=True).eval()
    detr_processor = AutoImageProcessor.from_pretrained(root + "/detr", trust_remote_code=True)
    vilt_processor = AutoProcessor.from_pretrained(root + "/vilt", trust_remote_code=True)
    loaded = {"detr": detr, "vilt": vilt, "detr_processor": detr_processor, "vilt_processor": vilt_processor,
              "detr_auto_processor": AutoProcessor.from_pretrained(root + "/detr", trust_remote_code=True),
              "vilt_image_processor": AutoImageProcessor.from_pretrained(root + "/vilt", trust_remote_code=True),
              "detr_base": AutoModel.from_pretrained(root + "/detr", trust_remote_code=True),
              "vilt_config": AutoConfig.from_pretrained(root + "/vilt", trust_remote_code=True)}
    report["classes"] = {name: type(obj).__module__ + "." + type(obj).__name__ for name, obj in loaded.items()}
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
"""

# Loads each folder named in folders.json with the Auto classes given there, runs model and processor on the saved
# inputs, and records the classes it got.
SAVE_PATHS_SCRIPT = """
    import torch
    import transformers
    from PIL import Image
    root = sys.argv[1]
    folders = json.load(open(root + "/folders.json"))
    inputs = torch.load(root + "/inputs.pt")
    image = Image.open(root + "/image.png")
    outputs, report["classes"], report["auto_maps"] = {}, {}, {}
    for name, (folder, auto_model, auto_processor, family) in folders.items():
        model = getattr(transformers, auto_model).from_pretrained(folder, trust_remote_code=True).eval()
        processor = getattr(transformers, auto_processor).from_pretrained(folder, trust_remote_code=True)
        report["classes"][name] = [type(model).__module__ + "." + type(model).__name__,
                                   type(processor).__module__ + "." + type(processor).__name__]
        with torch.no_grad():
            if family == "detr":
                outputs[name] = model(inputs["detr_pixel_values"], pixel_mask=inputs["detr_pixel_mask"]).logits
                outputs[name + "_processed"] = processor(image, return_tensors="pt")["pixel_values"]
            else:
                outputs[name] = model(**inputs["vilt"]).logits
                outputs[name + "_processed"] = processor(images=image, text="a red square")["input_ids"]
    torch.save(outputs, root + "/outputs.pt")
"""


def _image(path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
    return Image.open(path)


def _models():
    torch.manual_seed(0)
    detr = detrvilt.DetrForObjectDetection(tiny_detr_config()).eval()
    vilt = detrvilt.ViltForQuestionAnswering(tiny_vilt_config(vocab_size=30522, max_position_embeddings=40)).eval()
    return detr, vilt


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    detr, vilt = _models()
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
    assert "custom_pipelines" not in detr_config  # DETR uses transformers' own pipelines
    assert {"configuration_detr.py", "modeling_detr.py", "backbone_detr.py", "loss_detr.py",
            "image_processing_detr.py"} <= {p.name for p in (root / "detr").iterdir()}
    preprocessor = json.loads((root / "detr" / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"]["AutoImageProcessor"] == "image_processing_detr.DetrviltDetrImageProcessor"
    vilt_config = json.loads((root / "vilt" / "config.json").read_text())
    assert vilt_config["auto_map"]["AutoModelForVisualQuestionAnswering"] == "heads_vilt.ViltForQuestionAnswering"
    assert vilt_config["custom_pipelines"] == {"visual-question-answering": {
        "impl": "pipeline_vilt.ViltVisualQuestionAnsweringPipeline", "pt": ["AutoModelForVisualQuestionAnswering"],
        "type": "multimodal"}}
    processor = json.loads((root / "vilt" / "processor_config.json").read_text())
    assert processor["auto_map"]["AutoProcessor"] == "processing_vilt.DetrviltViltProcessor"
    assert processor["image_processor"]["auto_map"]["AutoImageProcessor"] == (
        "image_processing_vilt.DetrviltViltImageProcessor")
    vilt_files = {p.name for p in (root / "vilt").iterdir()}
    assert {"heads_vilt.py", "modeling_vilt.py", "embeddings_vilt.py", "wpa_vilt.py", "timm_vilt.py",
            "processing_vilt.py", "image_processing_vilt.py", "configuration_vilt.py", "pipeline_vilt.py"} <= vilt_files
    # The model object keeps no trace of the save.
    assert "auto_map" not in detrvilt.DetrForObjectDetection(tiny_detr_config()).config.to_dict()


def test_save_for_hub_leaves_the_config_as_it_found_it(tmp_path):
    model = detrvilt.ViltForQuestionAnswering(tiny_vilt_config())
    model.config.custom_pipelines = {"stale-task": {"impl": "gone.Gone", "pt": []}}
    save_for_hub(model, None, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert list(saved["custom_pipelines"]) == ["visual-question-answering"]  # the stale entry is not written
    assert model.config.custom_pipelines == {"stale-task": {"impl": "gone.Gone", "pt": []}}
    assert "auto_map" not in model.config.__dict__


def test_a_process_without_detrvilt_loads_and_reproduces_the_saved_models(saved):
    root, expected = saved
    report = run_without_detrvilt(SAVE_FOR_HUB_SCRIPT, [root], cwd=root)
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


def test_every_detrvilt_class_is_marked_for_its_auto_class():
    marks = save_auto_classes()
    assert marks[detrvilt.DetrForObjectDetection] == "AutoModelForObjectDetection"
    assert marks[detrvilt.DetrModel] == "AutoModel"
    assert marks[detrvilt.DetrForSegmentation] == "AutoModelForImageSegmentation"
    assert marks[detrvilt.ViltForPreTraining] == "AutoModelForPreTraining"
    assert marks[detrvilt.ViltForImageAndTextRetrieval] == "AutoModelForSequenceClassification"
    assert marks[detrvilt.DetrSegmentationConfig] == "AutoConfig"
    assert marks[detrvilt.DetrviltViltProcessor] == "AutoProcessor"
    for cls, auto_name in marks.items():  # what `import detrvilt` did
        assert cls._auto_class == auto_name, cls


# ------------------------------------------------------------------------------------------ every other save path


class LocalHub:
    """Stands in for transformers' `hf_api()` in `push_to_hub`: repositories are folders under `root`, a commit
    copies its files there. Records the calls."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, kwargs))
        for operation in operations:
            target = self.root / repo_id / operation.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(operation.path_or_fileobj, target)
        return f"local://{repo_id}"


def _vqa_dataset(processor, count=4):
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(count)]
    encoding = processor(images=images, text=["what is it?"] * count, return_tensors="pt")
    labels = torch.zeros(count, 5)
    labels[:, 1] = 1.0
    return [{**{k: v[i] for k, v in encoding.items()}, "labels": labels[i]} for i in range(count)]


@pytest.fixture(scope="module")
def save_paths(tmp_path_factory):
    """One folder per save path: {name: (folder, Auto model class, Auto processor class, family)}."""
    root = tmp_path_factory.mktemp("save_paths")
    detr, vilt = _models()
    detr_processor = detrvilt.DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    vilt_processor = default_vilt_processor(shortest_edge=64)
    folders = {}

    # 1. plain save_pretrained of model and processor
    detr.save_pretrained(root / "detr_save_pretrained")
    detr_processor.save_pretrained(root / "detr_save_pretrained")
    vilt.save_pretrained(root / "vilt_save_pretrained")
    vilt_processor.save_pretrained(root / "vilt_save_pretrained")
    folders["detr_save_pretrained"] = ("AutoModelForObjectDetection", "AutoImageProcessor", "detr")
    folders["vilt_save_pretrained"] = ("AutoModelForVisualQuestionAnswering", "AutoProcessor", "vilt")

    # 2. push_to_hub, into a local stand-in for the Hub (transformers saves into a temporary folder, then commits)
    hub = LocalHub(root / "hub")
    card = ModelCard.from_template(ModelCardData(library_name="transformers"), model_description="test")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("transformers.utils.hub.hf_api", lambda: hub)
        patch.setattr("transformers.utils.hub.create_and_tag_model_card", lambda *args, **kwargs: card)
        detr.push_to_hub("someone/detr-pushed")
        detr_processor.push_to_hub("someone/detr-pushed")
        vilt.push_to_hub("someone/vilt-pushed")
        vilt_processor.push_to_hub("someone/vilt-pushed")
    assert [call[0] for call in hub.calls].count("create_commit") == 4
    shutil.copytree(hub.root / "someone" / "detr-pushed", root / "detr_push_to_hub")
    shutil.copytree(hub.root / "someone" / "vilt-pushed", root / "vilt_push_to_hub")
    folders["detr_push_to_hub"] = folders["detr_save_pretrained"]
    folders["vilt_push_to_hub"] = folders["vilt_save_pretrained"]

    # 3. Trainer: a checkpoint during training and save_model() at the end (two steps, nothing learned to speak of)
    trainer_vilt = detrvilt.ViltForQuestionAnswering(vilt.config)
    trainer_vilt.load_state_dict(vilt.state_dict())
    arguments = TrainingArguments(output_dir=str(root / "trainer"), max_steps=2, save_strategy="steps", save_steps=1,
                                  per_device_train_batch_size=2, learning_rate=0.0, report_to=[], use_cpu=True,
                                  logging_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=trainer_vilt, args=arguments, train_dataset=_vqa_dataset(vilt_processor),
                      processing_class=vilt_processor)
    trainer.train()
    trainer.save_model(str(root / "vilt_trainer_save_model"))
    shutil.copytree(root / "trainer" / "checkpoint-1", root / "vilt_trainer_checkpoint")
    folders["vilt_trainer_save_model"] = folders["vilt_save_pretrained"]
    folders["vilt_trainer_checkpoint"] = folders["vilt_save_pretrained"]

    # 4. the training recipes' final save (Accelerate loop and Trainer recipes)
    save_trained(detr, detr_processor, str(root / "detr_save_trained"), summary={"eval": {"map": 0.5}})
    folders["detr_save_trained"] = folders["detr_save_pretrained"]

    folders = {name: (str(root / name), *spec) for name, spec in folders.items()}
    (root / "folders.json").write_text(json.dumps(folders))
    pixel_values, pixel_mask = padded_pair()
    batch = vilt_batch()
    torch.save({"detr_pixel_values": pixel_values, "detr_pixel_mask": pixel_mask, "vilt": batch}, root / "inputs.pt")
    image = _image(root / "image.png")
    with torch.no_grad():
        detr_logits, vilt_logits = detr(pixel_values, pixel_mask=pixel_mask).logits, vilt(**batch).logits
    expected = {}
    for name, (_, _, _, family) in folders.items():
        expected[name] = detr_logits if family == "detr" else vilt_logits
        expected[name + "_processed"] = (detr_processor(image, return_tensors="pt")["pixel_values"] if family == "detr"
                                         else vilt_processor(images=image, text="a red square")["input_ids"])
    return root, folders, expected


def test_every_save_path_writes_auto_map_and_the_code(save_paths):
    _, folders, _ = save_paths
    for name, (folder, auto_model, _, family) in folders.items():
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        model_file = "modeling_detr" if family == "detr" else "heads_vilt"
        assert config["auto_map"]["AutoConfig"] == f"configuration_{family}.{'Detr' if family == 'detr' else 'Vilt'}" \
                                                   "Config", name
        assert config["auto_map"][auto_model].startswith(model_file + "."), name
        files = {p.name for p in folder.iterdir()}
        assert {f"{model_file}.py", f"configuration_{family}.py", f"image_processing_{family}.py"} <= files, name
        if family == "vilt":
            assert "processing_vilt.py" in files, name
            processor = json.loads((folder / "processor_config.json").read_text())
            assert processor["auto_map"] == {"AutoProcessor": "processing_vilt.DetrviltViltProcessor"}, name
        else:
            processor = json.loads((folder / "preprocessor_config.json").read_text())
            assert processor["auto_map"]["AutoImageProcessor"] == (
                "image_processing_detr.DetrviltDetrImageProcessor"), name


def test_every_save_path_loads_without_detrvilt(save_paths):
    root, folders, expected = save_paths
    report = run_without_detrvilt(SAVE_PATHS_SCRIPT, [root], cwd=root)
    assert set(report["classes"]) == set(folders)
    for name, (model_class, processor_class) in report["classes"].items():
        assert model_class.startswith("transformers_modules.") and processor_class.startswith(
            "transformers_modules."), (name, model_class, processor_class)
    actual = torch.load(root / "outputs.pt")
    assert set(actual) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, atol=1e-6, rtol=0, msg=name)


def test_accelerate_checkpoints_are_training_state_not_model_folders(tmp_path):
    """`accelerator.save_state` (the Accelerate loop's `checkpoint-*`) writes state dicts for resuming, not a
    `config.json`: no loader reads it as a model, so it needs no remote code; the loop's final folder does
    (`save_trained`, above)."""
    from accelerate import Accelerator

    model = detrvilt.DetrForObjectDetection(tiny_detr_config())
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(model)
    accelerator.save_state(str(tmp_path / "checkpoint"))
    files = {p.name for p in (tmp_path / "checkpoint").iterdir()}
    assert "model.safetensors" in files and "config.json" not in files
    with pytest.raises((OSError, ValueError), match="config.json|model_type"):
        AutoModelForObjectDetection.from_pretrained(tmp_path / "checkpoint")


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
