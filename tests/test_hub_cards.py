"""Model cards from hub_cards/ and scripts/push_to_hub.py, on the output of a real (tiny, synthetic) DETR training run
of the Accelerate recipe: the card's YAML parses with huggingface_hub, its numbers are the run's, the dry run writes
exactly the uploaded files, and an upload passes repo creation, privacy, revision and commit message to
huggingface_hub without ever showing the token."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.state import AcceleratorState
from huggingface_hub import ModelCard
from vilt_testing import tiny_vilt_config

import detrvilt
from detrvilt.hub import render_model_card, training_facts

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import push_to_hub  # noqa: E402
import train_detr_accelerate  # noqa: E402

TINY_RUN = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--in_memory", "--progress_bar", "false",
            "--learning_rate", "0.0003", "--seed", "7", "--backbone", "resnet18", "--d_model", "32",
            "--encoder_layers", "1", "--decoder_layers", "2", "--attention_heads", "4", "--ffn_dim", "64",
            "--num_queries", "6", "--no_freeze_batch_norm", "--synthetic_train_size", "8", "--synthetic_eval_size",
            "5", "--synthetic_image_size", "64", "--synthetic_max_objects", "3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        train_detr_accelerate.main(["--output_dir", str(out), *TINY_RUN])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return out, json.loads((out / "train_summary.json").read_text())


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_from_a_training_run_carries_its_numbers(run):
    folder, summary = run
    hyper_parameters, results = training_facts(summary)
    assert hyper_parameters["learning_rate"] == 0.0003 and hyper_parameters["seed"] == 7
    assert hyper_parameters["max_steps"] == 2 and hyper_parameters["backbone"] == "resnet18"
    config = detrvilt.DetrConfig.from_pretrained(folder)
    card = render_model_card(config, "someone/detr-shapes", hyper_parameters, results, dataset_name="shapes")
    text = str(card)
    metadata = _front_matter(text)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "object-detection"
    assert metadata["license"] == "apache-2.0" and "detrvilt" in metadata["tags"]
    reparsed = ModelCard(text)  # huggingface_hub parses the model-index back into EvalResults
    by_metric = {result.metric_type: result.metric_value for result in reparsed.data.eval_results}
    coco = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")
    # Every COCO number of the run that applies (pycocotools' -1 means "no object of that size") and nothing else.
    assert by_metric == pytest.approx({k: summary["eval"][k] for k in coco if summary["eval"][k] >= 0})
    assert "map" in by_metric and "map_50" in by_metric
    assert all(result.dataset_name == "shapes" for result in reparsed.data.eval_results)
    # Body: the sections, the run's hyper-parameters and its mAP in the evaluation table.
    for heading in ("## How to load it", "## Training", "## Evaluation", "## Limitations", "## Citation"):
        assert heading in text
    assert "import detrvilt" in text and "trust_remote_code=True" in text and "someone/detr-shapes" in text
    assert "| learning_rate | 0.0003 |" in text and "| seed | 7 |" in text
    assert f"| mAP | {round(summary['eval']['map'], 4)} |" in text
    assert "circle, square, triangle" in text and "Carion" in text


def test_vilt_card_names_its_task_and_auto_class():
    config = tiny_vilt_config(architectures=["ViltForQuestionAnswering"])
    card = render_model_card(config, "someone/vilt-vqa", {"learning_rate": 1e-4}, {"vqa_score": 0.71},
                             dataset_name="VQAv2", dataset_id="HuggingFaceM4/VQAv2")
    metadata = _front_matter(str(card))
    assert metadata["pipeline_tag"] == "visual-question-answering"
    assert metadata["datasets"] == ["HuggingFaceM4/VQAv2"]
    result = metadata["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "vqa_score", "value": 0.71, "name": "vqa_score"}
    assert "AutoModelForVisualQuestionAnswering.from_pretrained(\"someone/vilt-vqa\", trust_remote_code=True)" in str(
        card)
    assert "Kim, Wonjae" in str(card)


def test_card_rejects_configs_of_other_models_and_missing_templates(tmp_path):
    import transformers

    with pytest.raises(TypeError, match="config must be"):
        render_model_card(transformers.DetrConfig(), "x/y")
    with pytest.raises(ValueError, match="template_dir must hold"):
        render_model_card(detrvilt.DetrConfig(), "x/y", template_dir=tmp_path)


def test_dry_run_writes_exactly_what_would_be_uploaded(run, tmp_path, capsys):
    folder, summary = run
    staged = tmp_path / "staged"
    plan = push_to_hub.main(["--output_dir", str(folder), "--repo_id", "someone/detr-shapes", "--dry_run", str(staged),
                             "--revision", "v1", "--commit_message", "first"])
    written = sorted(p.name for p in staged.iterdir())
    assert plan["files"] == written and plan["dry_run"] is True and plan["private"] is True
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "train_summary.json",
            "modeling_detr.py", "configuration_detr.py", "image_processing_detr.py"} <= set(written)
    assert not any(name.startswith("checkpoint-") for name in written)
    assert json.loads(capsys.readouterr().out)["revision"] == "v1"
    assert json.loads((staged / "config.json").read_text())["auto_map"]["AutoModelForObjectDetection"]
    card = ModelCard.load(staged / "README.md")
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["map"] == pytest.approx(
        summary["eval"]["map"])


def test_upload_goes_through_huggingface_hub_and_never_shows_the_token(run, tmp_path, monkeypatch, capsys):
    folder, _ = run
    secret = "hf_" + "x" * 34
    monkeypatch.setenv("HF_TOKEN", secret)
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def create_branch(self, repo_id, **kwargs):
            calls.append(("create_branch", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()), kwargs))
            return "https://huggingface.co/someone/detr-shapes/commit/abc"

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    plan = push_to_hub.main(["--output_dir", str(folder), "--repo_id", "someone/detr-shapes", "--private", "false",
                             "--revision", "exp", "--commit_message", "tiny run"])
    assert [c[0] for c in calls] == ["create_repo", "create_branch", "upload_folder"]
    assert calls[0][2] == {"private": False, "exist_ok": True}
    assert calls[1][2] == {"branch": "exp", "exist_ok": True}
    uploaded, upload_kwargs = calls[2][1], calls[2][2]
    assert uploaded == plan["files"] and "README.md" in uploaded
    assert upload_kwargs["commit_message"] == "tiny run" and upload_kwargs["revision"] == "exp"
    assert "token" not in upload_kwargs and plan["commit_url"].endswith("/abc")
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    assert secret not in json.dumps(plan)


def test_staging_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="folder must be"):
        push_to_hub.main(["--output_dir", str(tmp_path), "--repo_id", "a/b", "--dry_run", str(tmp_path / "s")])


def test_dry_run_stages_a_space_next_to_the_model(run, tmp_path):
    folder, _ = run
    staged = tmp_path / "staged"
    requirement = "detrvilt[space] @ git+https://example.invalid/detrvilt"
    plan = push_to_hub.main(["--output_dir", str(folder), "--repo_id", "someone/detr-shapes", "--dry_run", str(staged),
                             "--space_id", "someone/detr-demo", "--space_requirement", requirement,
                             "--space_threshold", "0.4"])
    space = tmp_path / "staged_space"
    assert plan["space"]["dir"] == str(space) and plan["space"]["repo_id"] == "someone/detr-demo"
    assert plan["space"]["files"] == sorted(p.name for p in space.iterdir()) == ["README.md", "app.py",
                                                                                 "requirements.txt"]
    assert "app.py" not in plan["files"]  # the model repository holds no app
    metadata = _front_matter((space / "README.md").read_text())
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py"
    assert metadata["models"] == ["someone/detr-shapes"] and "detr" in metadata["tags"]
    from importlib.metadata import version

    assert metadata["sdk_version"] == version("gradio")
    app = (space / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert 'load_space_model("someone/detr-shapes")' in app and "threshold=0.4" in app
    assert (space / "requirements.txt").read_text() == requirement + "\n"


def test_space_staging_rejects_bad_arguments(tmp_path):
    from detrvilt.hub import stage_space

    with pytest.raises(ValueError, match="family must be 'detr' or 'vilt', got 'yolo'"):
        stage_space("a/b", tmp_path / "s", "yolo")
    with pytest.raises(ValueError, match="requirement must be one pip requirement line"):
        stage_space("a/b", tmp_path / "s", "detr", requirement="a\nb")
    with pytest.raises(ValueError, match="space_id must be 'owner/name', got 'demo'"):
        push_to_hub.main(["--output_dir", str(tmp_path), "--repo_id", "a/b", "--space_id", "demo"])


def test_upload_with_a_space_creates_a_gradio_space_repository(run, monkeypatch):
    folder, _ = run
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()), kwargs))
            return f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    plan = push_to_hub.main(["--output_dir", str(folder), "--repo_id", "someone/detr-shapes",
                             "--space_id", "someone/detr-demo"])
    assert [(c[0], c[1] if c[0] == "create_repo" else c[2]["repo_id"]) for c in calls] == [
        ("create_repo", "someone/detr-shapes"), ("upload_folder", "someone/detr-shapes"),
        ("create_repo", "someone/detr-demo"), ("upload_folder", "someone/detr-demo")]
    assert calls[2][2] == {"repo_type": "space", "space_sdk": "gradio", "private": True, "exist_ok": True}
    assert calls[3][1] == ["README.md", "app.py", "requirements.txt"] and calls[3][2]["repo_type"] == "space"
    assert plan["space"]["commit_url"].endswith("someone/detr-demo/commit/abc")
