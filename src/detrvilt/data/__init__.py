"""Data for detrvilt's models. DETR's parts are in `detr/` (detection datasets from COCO folders, the Hub format and
the synthetic shapes; the paper's augmentations; the per-example transform and the collator), ViLT's in `vilt/`
(tokenizer, collators, loaders, VQA answers, synthetic scenes); `images.py` decodes an image value for both."""

from .detr.augmentation import PAPER_MAX_SIZE, PAPER_SCALES, DetrTrainAugmentation
from .detr.coco import coco_id2label, detection_features, load_coco_detection, write_coco_detection
from .detr.detection import (
    DetrDataCollator,
    DetrDetectionTransform,
    SeededDetectionDataset,
    count_dropped,
    example_generator,
    objects_to_annotation,
    prepare_detection_dataset,
)
from .detr.panoptic_shapes import make_panoptic_shapes, panoptic_categories
from .detr.shapes import SHAPES, make_shapes_dataset, render_shapes_image
from .images import decode_image
from .vilt.collators import (
    BatchSeededCollator,
    IndexedExamples,
    ViltITMCollator,
    ViltMLMCollator,
    ViltNLVR2Collator,
    ViltPretrainingCollator,
    ViltRetrievalCollator,
    ViltVQACollator,
    retrieval_evaluation_batch,
    retrieval_evaluation_pairs,
    whole_word_mask,
)
from .vilt.loaders import load_karpathy_captions, load_nlvr2, load_vilt_dataset_from_disk, load_vqav2
from .vilt.synthetic import (
    VQA_ANSWERS,
    make_vilt_captions_dataset,
    make_vilt_nlvr2_dataset,
    make_vilt_retrieval_dataset,
    make_vilt_vqa_dataset,
)
from .vilt.tokenizer import default_vilt_processor, default_vilt_tokenizer
from .vilt.vqa import build_answer_vocabulary, label2id_from, normalize_answer, vqa_score, vqa_targets

__all__ = [
    "DetrDataCollator",
    "DetrDetectionTransform",
    "DetrTrainAugmentation",
    "SeededDetectionDataset",
    "PAPER_MAX_SIZE",
    "PAPER_SCALES",
    "SHAPES",
    "coco_id2label",
    "count_dropped",
    "decode_image",
    "detection_features",
    "example_generator",
    "load_coco_detection",
    "make_panoptic_shapes",
    "make_shapes_dataset",
    "panoptic_categories",
    "objects_to_annotation",
    "prepare_detection_dataset",
    "render_shapes_image",
    "write_coco_detection",
    "VQA_ANSWERS",
    "BatchSeededCollator",
    "IndexedExamples",
    "ViltPretrainingCollator",
    "ViltITMCollator",
    "ViltMLMCollator",
    "ViltNLVR2Collator",
    "ViltRetrievalCollator",
    "ViltVQACollator",
    "build_answer_vocabulary",
    "default_vilt_processor",
    "default_vilt_tokenizer",
    "label2id_from",
    "load_karpathy_captions",
    "load_nlvr2",
    "load_vilt_dataset_from_disk",
    "load_vqav2",
    "make_vilt_captions_dataset",
    "make_vilt_nlvr2_dataset",
    "make_vilt_retrieval_dataset",
    "make_vilt_vqa_dataset",
    "normalize_answer",
    "retrieval_evaluation_batch",
    "retrieval_evaluation_pairs",
    "vqa_score",
    "vqa_targets",
    "whole_word_mask",
]
