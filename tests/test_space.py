"""The Space app (`detrvilt.space`): its functions on tiny models (default tier), the staged Space's `app.py`, and the
app served on 127.0.0.1 and driven in headless Chromium (marker `browser`: Debian's `chromium` package driven by
Playwright for Python, never a downloaded browser build; `.ci/run` installs it).

The browser test writes its screenshots to `DETRVILT_SCREENSHOT_DIR` when set, else to a temporary folder; it runs
the tiny random models unless `DETRVILT_SPACE_DETR_MODEL` / `DETRVILT_SPACE_VILT_MODEL` name other folders, on a
drawn picture unless `DETRVILT_SPACE_DETR_IMAGE` / `DETRVILT_SPACE_VILT_IMAGE` name image files, with the question
`DETRVILT_SPACE_QUESTION`. docs/pictures/space_detr.png and space_vilt.png were made so, with the demo's trained
models and pictures of its synthetic sets (docs/hub.md gives the command).
"""

import io
import os
import runpy
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_detr_config
from PIL import Image, ImageDraw
from vilt_testing import randomize_, tiny_vilt_config

import detrvilt
from detrvilt.data import default_vilt_processor
from detrvilt.hub import save_for_hub, stage_space
from detrvilt.modeling.vilt.pipeline_vilt import ViltVisualQuestionAnsweringPipeline
from detrvilt.space import answer_question, box_attention, detect_objects, load_space_model
from detrvilt.viz import detect, run_detr

CHROMIUM = "/usr/bin/chromium"
SHAPES = {0: "circle", 1: "square", 2: "triangle"}
ANSWERS = ["yes", "no", "red", "blue", "two"]


def _shapes_image(path=None) -> Image.Image:
    """A grey 160 x 120 picture with a red square, a blue circle and a green triangle."""
    image = Image.new("RGB", (160, 120), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    draw.rectangle((15, 20, 60, 65), fill=(200, 30, 30))
    draw.ellipse((80, 15, 130, 65), fill=(30, 30, 200))
    draw.polygon([(60, 110), (100, 70), (140, 110)], fill=(30, 180, 30))
    if path is not None:
        image.save(path)
    return image


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    torch.manual_seed(0)
    detr = detrvilt.DetrForObjectDetection(tiny_detr_config(num_labels=3, id2label=SHAPES,
                                                            label2id={v: k for k, v in SHAPES.items()})).eval()
    with torch.no_grad():  # confident "square" everywhere: random weights still give boxes above the threshold
        detr.class_labels_classifier.bias[1] = 6.0
    detr_processor = detrvilt.DetrImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    save_for_hub(detr, detr_processor, root / "detr-tiny-random")
    vqa = randomize_(detrvilt.ViltForQuestionAnswering(tiny_vilt_config(
        vocab_size=30522, max_position_embeddings=40, id2label=dict(enumerate(ANSWERS)),
        label2id={a: i for i, a in enumerate(ANSWERS)})), seed=3).eval()
    save_for_hub(vqa, default_vilt_processor(shortest_edge=96), root / "vilt-tiny-random")
    return root


def test_detr_functions_draw_boxes_and_the_attention_of_a_chosen_box(models):
    space = load_space_model(str(models / "detr-tiny-random"))
    assert space.family == "detr" and type(space.model) is detrvilt.DetrForObjectDetection
    image = _shapes_image()
    picture, rows, detections = detect_objects(space, image, threshold=0.5)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    expected = detect(run_detr(space.model, space.processor, [image]), space.processor, 0.5)[0]
    assert len(rows) == len(expected["scores"]) > 0
    assert [row[1] for row in rows] == [SHAPES[i] for i in expected["labels"].tolist()]
    assert [row[2] for row in rows] == [round(s, 3) for s in expected["scores"].tolist()]
    assert detections.choices(space.model.config.id2label)[0] == f"1: square ({expected['scores'][0]:.2f})"
    first, last = box_attention(space, detections, 1), box_attention(space, detections, len(rows))
    assert first.shape == last.shape and first.dtype == np.uint8
    if int(detections.detection["query_indices"][0]) != int(detections.detection["query_indices"][-1]):
        assert not np.array_equal(first, last)  # another query looks elsewhere
    with pytest.raises(ValueError, match=f"box must be a detected box number in \\[1, {len(rows)}\\], got 0"):
        box_attention(space, detections, 0)
    with pytest.raises(ValueError, match="threshold must be in \\[0, 1\\), got 1.5"):
        detect_objects(space, image, threshold=1.5)
    with pytest.raises(ValueError, match="image is missing"):
        detect_objects(space, None)


def test_vilt_functions_answer_and_draw_the_word_patch_alignment(models):
    space = load_space_model(str(models / "vilt-tiny-random"))
    assert space.family == "vilt"
    image = _shapes_image()
    scores, picture = answer_question(space, image, "what colour is the square?", top_k=3)
    pipe = ViltVisualQuestionAnsweringPipeline(model=space.model, processor=space.processor, device=-1)
    expected = pipe(image, "what colour is the square?", top_k=3)
    assert list(scores) == [a["answer"] for a in expected]
    np.testing.assert_allclose(list(scores.values()), [a["score"] for a in expected], atol=1e-6)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3 and picture.shape[0] > 100
    with pytest.raises(ValueError, match="question must be a non-empty string"):
        answer_question(space, image, " ")


def test_a_hub_id_is_downloaded_with_huggingface_hub(models, monkeypatch):
    asked = []

    def snapshot_download(repo_id):
        asked.append(repo_id)
        return str(models / "detr-tiny-random")

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    space = load_space_model("someone/detr-shapes")
    assert asked == ["someone/detr-shapes"] and space.source == "someone/detr-shapes" and space.family == "detr"
    with pytest.raises(ValueError, match="model_id must be a folder or a Hub repository id"):
        load_space_model("")


def test_the_staged_space_app_builds_the_gradio_app(models, tmp_path, monkeypatch):
    gradio = pytest.importorskip("gradio")
    stage_space("someone/vilt-vqa", tmp_path / "space", "vilt")
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda repo_id: str(models / "vilt-tiny-random"))
    namespace = runpy.run_path(str(tmp_path / "space" / "app.py"), run_name="space_app")
    assert isinstance(namespace["app"], gradio.Blocks)


# ---------------------------------------------------------------------------------------------------- the browser


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServedApp:
    """`python -m detrvilt.space` in a subprocess on 127.0.0.1, stopped (by its own process id) on exit."""

    def __init__(self, model_id: str, log: Path, threshold: float = 0.5):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   HF_DATASETS_OFFLINE="1", NO_PROXY="127.0.0.1,localhost")
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "detrvilt.space", "--model_id", model_id, "--port", str(self.port),
             "--threshold", str(threshold)], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def __enter__(self):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"the app did not answer on {self.url} within 180 s:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


def _screenshot(page, tmp_path, name: str) -> Path:
    """The whole page as a PNG of 256 colours (as `detrvilt.viz` saves its pictures: 3-4x smaller) in
    `DETRVILT_SCREENSHOT_DIR`, else in `tmp_path`."""
    folder = Path(os.environ.get("DETRVILT_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(io.BytesIO(page.screenshot(full_page=True))) as shot:
        shot.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(folder / name, optimize=True)
    return folder / name


@pytest.mark.browser
def test_detr_app_in_chromium_shows_boxes_labels_and_the_attention(models, browser, tmp_path):
    model_id = os.environ.get("DETRVILT_SPACE_DETR_MODEL") or str(models / "detr-tiny-random")
    image = Path(os.environ.get("DETRVILT_SPACE_DETR_IMAGE") or tmp_path / "shapes.png")
    if not image.is_file():
        _shapes_image(image)
    _, rows, _ = detect_objects(load_space_model(model_id), Image.open(image), threshold=0.5)
    assert rows, "the model must find a box in the picture above the app's threshold"
    label = rows[0][1]  # the best-scoring box's label
    with ServedApp(model_id, tmp_path / "detr_app.log") as app:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app.url, wait_until="domcontentloaded")
        page.locator("input[type=file]").first.set_input_files(str(image))
        page.get_by_role("button", name="Detect").click()
        result = page.locator("#detections img")
        result.wait_for(state="visible", timeout=120_000)
        # a label in the boxes table (Gradio also keeps hidden copies of the cells: read the shown text)
        page.wait_for_function("label => document.querySelector('#boxes').innerText.includes(label)",
                               arg=label, timeout=60_000)
        page.locator("#attention img").wait_for(state="visible", timeout=60_000)  # the first box's attention
        assert result.evaluate("img => img.naturalWidth") > 100
        assert page.locator("#box-picker input").input_value().startswith(f"1: {label} (")
        assert Image.open(_screenshot(page, tmp_path, "space_detr.png")).width == 1280
        page.close()


@pytest.mark.browser
def test_vilt_app_in_chromium_answers_and_shows_the_alignment(models, browser, tmp_path):
    model_id = os.environ.get("DETRVILT_SPACE_VILT_MODEL") or str(models / "vilt-tiny-random")
    image = Path(os.environ.get("DETRVILT_SPACE_VILT_IMAGE") or tmp_path / "shapes.png")
    if not image.is_file():
        _shapes_image(image)
    text = os.environ.get("DETRVILT_SPACE_QUESTION") or "what colour is the square?"
    expected = next(iter(answer_question(load_space_model(model_id), Image.open(image), text)[0]))
    with ServedApp(model_id, tmp_path / "vilt_app.log") as app:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(app.url, wait_until="domcontentloaded")
        page.locator("input[type=file]").first.set_input_files(str(image))
        question = page.get_by_label("question")
        question.fill(text)
        page.get_by_role("button", name="Answer").click()
        page.wait_for_function("answer => document.querySelector('#answers').innerText.includes(answer)",
                               arg=expected, timeout=120_000)  # the top answer
        alignment = page.locator("#alignment img")
        alignment.wait_for(state="visible", timeout=60_000)
        assert alignment.evaluate("img => img.naturalWidth") > 100
        assert Image.open(_screenshot(page, tmp_path, "space_vilt.png")).width == 1280
        page.close()

