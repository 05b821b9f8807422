"""Pictures of what DETR and ViLT learned: predictions, DETR's encoder and decoder attention, object-query box
distributions, ViLT's word-patch alignment. Every function writes a PNG where asked and returns the matplotlib
figure (headless, no pyplot state). Maps come from the models' own `output_attentions` and WPA transport plan."""

from .common import save_figure
from .detr.demo import detr_demo_pictures
from .detr.pictures import (
    DetrInference,
    decoder_attention_grid,
    detect,
    draw_decoder_attention,
    draw_detections,
    draw_encoder_attention,
    draw_predictions,
    encoder_attention_grid,
    predict,
    run_detr,
)
from .detr.query_boxes import draw_query_box_distribution, plot_query_boxes, query_box_predictions
from .loading import load_model_and_processor
from .vilt.alignment import (
    WordPatchAlignment,
    draw_word_patch_alignment,
    plot_word_patch_alignment,
    word_patch_alignment,
)

__all__ = [
    "DetrInference",
    "WordPatchAlignment",
    "decoder_attention_grid",
    "detect",
    "detr_demo_pictures",
    "draw_decoder_attention",
    "draw_detections",
    "draw_encoder_attention",
    "draw_predictions",
    "draw_query_box_distribution",
    "draw_word_patch_alignment",
    "encoder_attention_grid",
    "load_model_and_processor",
    "plot_query_boxes",
    "plot_word_patch_alignment",
    "predict",
    "query_box_predictions",
    "run_detr",
    "save_figure",
    "word_patch_alignment",
]
