"""`--dataset_name` in the four training scripts, as transformers' examples take it: a local folder in the Hub's
layouts (Parquet files under `data/<split>-*.parquet`, read by `datasets.load_dataset(folder)`, as a Hub id is),
DETR's object-detection layout (cppe-5's) and ViLT's VQA (VQAv2's answers as dicts) and captions layouts."""

import sys
from pathlib import Path

import datasets
import pytest
from transformers import AutoModelForObjectDetection

from detrvilt.data import make_shapes_dataset, make_vilt_vqa_dataset
from detrvilt.data.detr.sources import to_detection_layout
from detrvilt.data.streaming import write_parquet_shards
from detrvilt.data.vilt.hub import to_vilt_layout
from detrvilt.training.detr.arguments import DetrDataArguments
from detrvilt.training.vilt.arguments import ViltDataArguments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import train_detr  # noqa: E402
import train_detr_accelerate  # noqa: E402
import train_vilt  # noqa: E402
import train_vilt_accelerate  # noqa: E402

SIZE = 64
TINY_DETR = ["--backbone", "resnet18", "--d_model", "32", "--encoder_layers", "1", "--decoder_layers", "2",
             "--attention_heads", "4", "--ffn_dim", "64", "--num_queries", "6", "--no_freeze_batch_norm",
             "--shortest_edge", str(SIZE), "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
             "--max_steps", "2"]
TINY_VILT = ["--task", "vqa", "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "4",
             "--intermediate_size", "64", "--patch_size", "16", "--image_size", str(SIZE), "--shortest_edge",
             str(SIZE), "--max_text_length", "20", "--answer_min_count", "1", "--per_device_train_batch_size", "2",
             "--per_device_eval_batch_size", "2", "--max_steps", "2"]
TRAINER = ["--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no"]
ACCELERATE = ["--report_to", "none", "--progress_bar", "false"]


def _hub_folder(folder: Path, train: datasets.Dataset, validation: datasets.Dataset) -> str:
    write_parquet_shards(train, folder / "data", split="train")
    write_parquet_shards(validation, folder / "data", split="validation")
    return str(folder)


@pytest.fixture(scope="module")
def detection_folder(tmp_path_factory):
    options = dict(image_size=SIZE, min_objects=1, max_objects=3)
    return _hub_folder(tmp_path_factory.mktemp("cppe5_like"), make_shapes_dataset(6, seed=0, **options),
                       make_shapes_dataset(3, seed=1, **options))


@pytest.fixture(scope="module")
def vqa_folder(tmp_path_factory):
    features = datasets.Features({
        "image": datasets.Image(), "question": datasets.Value("string"), "question_id": datasets.Value("int64"),
        "answers": datasets.List({"answer": datasets.Value("string"), "answer_id": datasets.Value("int64")})})

    def vqav2_layout(dataset):  # VQAv2 on the Hub: answers as dicts, no image_id needed
        answers = [[{"answer": a, "answer_id": i + 1} for i, a in enumerate(row)] for row in dataset["answers"]]
        return datasets.Dataset.from_dict({"image": dataset["image"], "question": dataset["question"],
                                           "question_id": dataset["question_id"], "answers": answers},
                                          features=features)

    return _hub_folder(tmp_path_factory.mktemp("vqav2_like"),
                       vqav2_layout(make_vilt_vqa_dataset(8, seed=0, image_size=SIZE)),
                       vqav2_layout(make_vilt_vqa_dataset(4, seed=1, image_size=SIZE)))


def test_detr_scripts_train_on_a_dataset_name(tmp_path, detection_folder, fresh_accelerate_state):
    result = train_detr_accelerate.main(["--output_dir", str(tmp_path / "accelerate"), "--dataset_name",
                                         detection_folder, *TINY_DETR, *ACCELERATE])
    assert len(result["losses"]) == 2 and result["eval"]["num_images"] == 3
    model = AutoModelForObjectDetection.from_pretrained(tmp_path / "accelerate")
    assert model.config.id2label == {0: "circle", 1: "square", 2: "triangle"}  # the ClassLabel of objects.category
    result = train_detr.main(["--output_dir", str(tmp_path / "trainer"), "--dataset_name", detection_folder,
                              "--eval_split_name", "", *TINY_DETR, *TRAINER])
    assert result["train"]["train_loss"] > 0 and result["eval"] is None


def test_vilt_scripts_train_vqa_on_a_dataset_name(tmp_path, vqa_folder, fresh_accelerate_state):
    result = train_vilt_accelerate.main(["--output_dir", str(tmp_path / "accelerate"), "--dataset_name", vqa_folder,
                                         *TINY_VILT, *ACCELERATE])
    assert len(result["losses"]) == 2 and 0.0 <= result["eval"]["vqa_score"] <= 1.0
    expected = make_vilt_vqa_dataset(8, seed=0, image_size=SIZE)["answers"]
    assert set(result["id2label"].values()) == {a for answers in expected for a in answers}
    assert result["train_dataset"]["image_id"] == list(range(8))  # added where the dataset has none
    result = train_vilt.main(["--output_dir", str(tmp_path / "trainer"), "--dataset_name", vqa_folder, *TINY_VILT,
                              *TRAINER])
    assert result["train"]["train_loss"] > 0 and 0.0 <= result["eval"]["eval_vqa_score"] <= 1.0


def test_dataset_name_errors_name_the_arguments(detection_folder):
    with pytest.raises(ValueError, match="--dataset_name and --dataset 'coco'"):
        DetrDataArguments(dataset="coco", dataset_name=detection_folder)
    with pytest.raises(ValueError, match="--dataset_name and --dataset 'files'"):
        ViltDataArguments(dataset="files", dataset_name="some/vqa", train_file="q.json", train_images_dir="images")
    with pytest.raises(ValueError, match=r"--eval_split_name 'dev' is not a split .* \['train', 'validation'\]"):
        train_detr_accelerate.main(["--output_dir", "unused", "--dataset_name", detection_folder,
                                    "--eval_split_name", "dev", *TINY_DETR])
    with pytest.raises(ValueError, match=r"no column\(s\) \['question'\] for task 'vqa'"):
        to_vilt_layout(datasets.Dataset.from_dict({"image": ["a.png"], "answers": [["yes"]]}), "vqa")


def test_layouts_are_mapped_to_the_collators_columns():
    # Detection objects as a list of per-object dicts -> one dict of lists per image, class names kept.
    objects = datasets.List({"bbox": datasets.List(datasets.Value("float32"), length=4),
                             "category": datasets.ClassLabel(names=["mask", "gloves"])})
    rows = datasets.Dataset.from_dict(
        {"image": ["a.png", "b.png"], "objects": [[{"bbox": [1, 2, 3, 4], "category": 1}], []]},
        features=datasets.Features({"image": datasets.Value("string"), "objects": objects}))
    mapped = to_detection_layout(rows)
    assert mapped[0]["objects"] == {"bbox": [[1.0, 2.0, 3.0, 4.0]], "category": [1]}
    assert mapped[1]["objects"] == {"bbox": [], "category": []} and mapped["image_id"] == [0, 1]
    assert mapped.features["objects"]["category"].feature.names == ["mask", "gloves"]
    with pytest.raises(ValueError, match="'objects' must hold 'bbox'"):
        to_detection_layout(datasets.Dataset.from_dict({"image": ["a.png"], "objects": [{"boxes": [[1, 2, 3, 4]]}]}))
    # Captions: a string per row or a list per row -> `captions`, a list of strings.
    single = to_vilt_layout(datasets.Dataset.from_dict({"image": ["a.png"], "caption": ["a red circle"]}), "pretrain")
    assert single[0]["captions"] == ["a red circle"] and single[0]["image_id"] == 0
    several = to_vilt_layout(datasets.Dataset.from_dict({"image": ["a.png"], "caption": [["one", "two"]]}),
                             "retrieval")
    assert several[0]["captions"] == ["one", "two"]
    answer = to_vilt_layout(datasets.Dataset.from_dict({"image": ["a.png"], "question": ["q?"], "answer": ["yes"]}),
                            "vqa")
    assert answer[0]["answers"] == ["yes"]
