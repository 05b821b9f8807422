"""detrvilt: DETR and ViLT, end-to-end transformers for detection and vision-language, on the Hugging Face stack.

``import detrvilt`` registers every model with transformers' Auto classes.
"""

from .hub import push_to_hub, register_auto_classes, save_for_hub
from .modeling.detr import (
    DetrConfig,
    DetrForObjectDetection,
    DetrForSegmentation,
    DetrLoss,
    DetrModel,
    DetrModelOutput,
    DetrObjectDetectionOutput,
    DetrSegmentationConfig,
    DetrSegmentationOutput,
    HungarianMatcher,
)
from .modeling.detr.image_processing_detr import DetrImageProcessor, DetrviltDetrImageProcessor
from .modeling.vilt import (
    ViltConfig,
    ViltForImageAndTextRetrieval,
    ViltForImagesAndTextClassification,
    ViltForPreTraining,
    ViltForQuestionAnswering,
    ViltModel,
)
from .modeling.vilt.image_processing_vilt import DetrviltViltImageProcessor, ViltImageProcessor
from .modeling.vilt.processing_vilt import DetrviltViltProcessor, ViltProcessor

__version__ = "0.1.0"

register_auto_classes()


def __getattr__(name):
    # `detrvilt.data` needs `datasets`, a heavy import: load it on first use, not with `import detrvilt`.
    if name == "make_shapes_dataset":
        from .data import make_shapes_dataset

        return make_shapes_dataset
    raise AttributeError(f"module 'detrvilt' has no attribute {name!r}")


__all__ = [
    "DetrConfig",
    "DetrForObjectDetection",
    "DetrForSegmentation",
    "DetrImageProcessor",
    "DetrLoss",
    "DetrModel",
    "DetrModelOutput",
    "DetrObjectDetectionOutput",
    "DetrSegmentationConfig",
    "DetrSegmentationOutput",
    "DetrviltDetrImageProcessor",
    "HungarianMatcher",
    "ViltConfig",
    "ViltForImageAndTextRetrieval",
    "ViltForImagesAndTextClassification",
    "ViltForPreTraining",
    "ViltForQuestionAnswering",
    "ViltModel",
    "DetrviltViltImageProcessor",
    "DetrviltViltProcessor",
    "ViltImageProcessor",
    "ViltProcessor",
    "push_to_hub",
    "register_auto_classes",
    "save_for_hub",
    "make_shapes_dataset",
]
