"""The Space app: try a trained DETR or ViLT in a browser, as models are shown on the Hugging Face Hub (Spaces).

``python -m detrvilt.space --model_id FOLDER_OR_HUB_ID`` serves it; `build_app(load_space_model(...))` returns the
`gradio.Blocks`. Needs the `space` extra (``pip install "detrvilt[space]"``: Gradio). `scripts/push_to_hub.py
--space_id` stages or uploads a Space folder whose `app.py` calls this.
"""

from .app import (
    Detections,
    SpaceModel,
    answer_question,
    box_attention,
    build_app,
    detect_objects,
    figure_to_array,
    load_space_model,
)

__all__ = ["Detections", "SpaceModel", "answer_question", "box_attention", "build_app", "detect_objects",
           "figure_to_array", "load_space_model"]
