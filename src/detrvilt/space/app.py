"""A Gradio app for one trained model, as Spaces show models on the Hub: DETR or ViLT, from a folder or a Hub id.

- DETR: upload an image, see the detected boxes (above a score threshold) in a picture and a table; pick a box to see
  its object query's decoder cross-attention over the image (the DETR paper's figure 6, for one object).
- ViLT: an image and a question: the top answers (VQA model; the image-text match score for a pretraining or
  retrieval model) and the word-patch alignment of the question's words over the image (Kim et al., 2021, figure 4).

The pictures are `detrvilt.viz`'s (`run_detr`, `detect`, `draw_detections`, `decoder_attention_grid`,
`word_patch_alignment`, `plot_word_patch_alignment`); the answers come from ViLT's pipelines. The functions below
the UI are plain Python (images in, arrays and tables out), tested without a browser; `build_app` wires them into
`gradio.Blocks`. Run it with ``python -m detrvilt.space --model_id FOLDER_OR_HUB_ID`` (needs the `space` extra).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from ..viz.common import DEFAULT_PANEL_INCHES, draw_box, new_figure, panel_aspect, show_heat_map
from ..viz.detr.pictures import DetrInference, decoder_attention_grid, detect, draw_detections, run_detr
from ..viz.loading import load_model_and_processor
from ..viz.vilt.alignment import plot_word_patch_alignment, word_patch_alignment

DETECTION_COLUMNS = ["box", "label", "score", "x0", "y0", "x1", "y1"]


@dataclass
class SpaceModel:
    """A loaded model for the app: `model` (eval mode), its `processor`, `family` (`"detr"` or `"vilt"`) and `source`
    (the folder or Hub id it came from)."""

    model: object
    processor: object
    family: str
    source: str


def load_space_model(model_id: str, device: str = "cpu") -> SpaceModel:
    """Load a saved detrvilt model: `model_id` is a local folder, or a Hub repository id (downloaded with
    `huggingface_hub.snapshot_download`, which honours `HF_HUB_OFFLINE` and the cache)."""
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"model_id must be a folder or a Hub repository id, got {model_id!r}")
    folder = model_id
    if not os.path.isdir(model_id):
        from huggingface_hub import snapshot_download

        folder = snapshot_download(model_id)
    model, processor, family = load_model_and_processor(folder, device)
    return SpaceModel(model, processor, family, model_id)


def figure_to_array(figure) -> np.ndarray:
    """A matplotlib figure as a `uint8` `(H, W, 3)` array (what `gradio.Image` shows)."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ---------------------------------------------------------------------------------------------------------- DETR


@dataclass
class Detections:
    """One image's DETR pass (with attentions) and its detections above the threshold, kept between UI events."""

    inference: DetrInference
    detection: dict

    def choices(self, id2label: dict) -> list[str]:
        """`"1: square (0.93)"`, one per detected box, for the box picker."""
        return [f"{k + 1}: {_label(id2label, label)} ({score:.2f})" for k, (label, score) in
                enumerate(zip(self.detection["labels"].tolist(), self.detection["scores"].tolist(), strict=True))]


def _label(id2label: dict, label: int) -> str:
    return str((id2label or {}).get(int(label), int(label)))


def detect_objects(space: SpaceModel, image, threshold: float = 0.7):
    """Run DETR on `image` (with attentions, for the box picker) and draw the boxes scoring above `threshold`.

    Returns:
        `(picture, rows, detections)`: the boxes drawn over the image (`uint8` `(H, W, 3)`), one table row per box
        (`DETECTION_COLUMNS`: number from 1, label, score, absolute x0, y0, x1, y1) and the [`Detections`].
    """
    if image is None:
        raise ValueError("image is missing: upload an image first")
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    inference = run_detr(space.model, space.processor, [image], output_attentions=True)
    detection = detect(inference, space.processor, float(threshold))[0]
    id2label = space.model.config.id2label
    figure = draw_detections(inference.images, [detection], id2label=id2label,
                             title=f"{len(detection['scores'])} objects (score > {float(threshold):.2f})",
                             panel_inches=6.0, columns=1)
    rows = [[k + 1, _label(id2label, label), round(score, 3), *[round(v, 1) for v in box]] for k, (label, score, box)
            in enumerate(zip(detection["labels"].tolist(), detection["scores"].tolist(), detection["boxes"].tolist(),
                             strict=True))]
    return figure_to_array(figure), rows, Detections(inference, detection)


def box_attention(space: SpaceModel, detections: Detections, box: int, layer: int = -1) -> np.ndarray:
    """The decoder cross-attention of the object query behind detected box number `box` (from 1), over the image,
    with the box drawn on top: `uint8` `(H, W, 3)`."""
    count = len(detections.detection["scores"])
    if not 1 <= int(box) <= count:
        raise ValueError(f"box must be a detected box number in [1, {count}], got {box!r}")
    k = int(box) - 1
    inference = detections.inference
    query = int(detections.detection["query_indices"][k])
    heat = inference.on_image(0, decoder_attention_grid(inference, 0, query, layer))
    shown = inference.images[0]
    figure, axes = new_figure(1, 1, DEFAULT_PANEL_INCHES * 2.4, panel_aspect(shown))
    show_heat_map(axes[0, 0], shown, heat)
    label = _label(space.model.config.id2label, detections.detection["labels"][k])
    draw_box(axes[0, 0], detections.detection["boxes"][k].tolist(), "cyan",
             f"{label} {float(detections.detection['scores'][k]):.2f}")
    figure.suptitle(f"box {box}: decoder cross-attention of query {query} (last layer, mean of heads)", fontsize=9)
    return figure_to_array(figure)


# ---------------------------------------------------------------------------------------------------------- ViLT


def answer_question(space: SpaceModel, image, question: str, top_k: int = 5):
    """ViLT on an image and a question.

    Returns:
        `(scores, picture)`: `{answer: score}` (the `top_k` VQA answers; for a pretraining or retrieval model
        `{"match": score}`, the image-text matching score of the question as a caption) and the word-patch alignment
        picture of the question's words (`uint8` `(H, W, 3)`).
    """
    from ..modeling.vilt.pipeline_vilt import ViltImageTextMatchingPipeline, ViltVisualQuestionAnsweringPipeline

    if image is None:
        raise ValueError("image is missing: upload an image first")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")
    kind = type(space.model).__name__
    if kind == "ViltForQuestionAnswering":
        vqa = ViltVisualQuestionAnsweringPipeline(model=space.model, processor=space.processor, device=-1)
        scores = {answer["answer"]: answer["score"] for answer in vqa(image, question, top_k=top_k)}
    elif kind in ("ViltForPreTraining", "ViltForImageAndTextRetrieval"):
        matcher = ViltImageTextMatchingPipeline(model=space.model, processor=space.processor, device=-1)
        scores = {"match": matcher(image, question)["score"]}
    else:
        raise ValueError(f"the app answers with a ViltForQuestionAnswering, ViltForPreTraining or "
                         f"ViltForImageAndTextRetrieval, got {kind}")
    alignment = word_patch_alignment(space.model, space.processor, [image], [question])[0]
    figure = plot_word_patch_alignment(alignment, question, max_words=7, columns=3, panel_inches=2.4)
    return scores, figure_to_array(figure)


# ------------------------------------------------------------------------------------------------------------ UI


def build_app(space: SpaceModel, threshold: float = 0.7, title: str | None = None):
    """The Gradio app (`gradio.Blocks`) for `space`'s model; call `.launch()` on it."""
    import gradio as gr

    # A local folder goes by its name (its path means nothing to a visitor); a Hub id as it is.
    name = os.path.basename(os.path.normpath(space.source)) if os.path.isdir(space.source) else space.source
    title = title or f"detrvilt {'DETR' if space.family == 'detr' else 'ViLT'}: {name}"
    with gr.Blocks(title=title) as app:
        gr.Markdown(f"# {title}")
        if space.family == "detr":
            _detr_ui(gr, space, threshold)
        else:
            _vilt_ui(gr, space)
    return app


def _detr_ui(gr, space: SpaceModel, threshold: float) -> None:
    gr.Markdown("Upload an image and press **Detect**; then pick a box to see where its object query looked.")
    state = gr.State()
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="pil", label="image")
            score = gr.Slider(0.0, 0.99, value=threshold, step=0.01, label="score threshold")
            run = gr.Button("Detect", variant="primary")
        with gr.Column():
            picture = gr.Image(label="detections", type="numpy", elem_id="detections")
            table = gr.Dataframe(headers=DETECTION_COLUMNS, label="boxes", elem_id="boxes", interactive=False)
    with gr.Row():
        picker = gr.Dropdown(choices=[], label="box", elem_id="box-picker")
        attention = gr.Image(label="decoder attention of the chosen box", type="numpy", elem_id="attention")

    def on_detect(upload, value):
        try:
            drawn, rows, detections = detect_objects(space, upload, value)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        choices = detections.choices(space.model.config.id2label)
        first = choices[0] if choices else None
        shown = box_attention(space, detections, 1) if choices else None
        return drawn, rows, gr.update(choices=choices, value=first), shown, detections

    def on_pick(choice, detections):
        if not choice or detections is None:
            return None
        return box_attention(space, detections, int(choice.split(":", 1)[0]))

    run.click(on_detect, [image, score], [picture, table, picker, attention, state])
    picker.input(on_pick, [picker, state], attention)


def _vilt_ui(gr, space: SpaceModel) -> None:
    gr.Markdown("Upload an image, ask a question about it and press **Answer**.")
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="pil", label="image")
            question = gr.Textbox(label="question", value="what is in the picture?")
            run = gr.Button("Answer", variant="primary")
        with gr.Column():
            answers = gr.Label(label="answers", num_top_classes=5, elem_id="answers")
    alignment = gr.Image(label="word-patch alignment", type="numpy", elem_id="alignment")

    def on_answer(upload, text):
        try:
            return answer_question(space, upload, text)
        except ValueError as error:
            raise gr.Error(str(error)) from error

    run.click(on_answer, [image, question], [answers, alignment])
    question.submit(on_answer, [image, question], [answers, alignment])


__all__ = ["Detections", "SpaceModel", "answer_question", "box_attention", "build_app", "detect_objects",
           "figure_to_array", "load_space_model"]
