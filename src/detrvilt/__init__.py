"""detrvilt: DETR and ViLT, end-to-end transformers for detection and vision-language, on the Hugging Face stack.

``import detrvilt`` registers every model with transformers' Auto classes.
"""

from .hub import register_auto_classes
from .modeling.detr import (
    DetrConfig,
    DetrForObjectDetection,
    DetrLoss,
    DetrModel,
    DetrModelOutput,
    DetrObjectDetectionOutput,
    HungarianMatcher,
)

__version__ = "0.1.0"

register_auto_classes()

__all__ = [
    "DetrConfig",
    "DetrForObjectDetection",
    "DetrLoss",
    "DetrModel",
    "DetrModelOutput",
    "DetrObjectDetectionOutput",
    "HungarianMatcher",
    "register_auto_classes",
]
