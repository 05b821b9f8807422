"""DETR (Carion et al., 2020): configuration, model, Hungarian loss, and the panoptic mask head. Imports only torch,
torchvision, timm, scipy, numpy and transformers, so that these files load from the Hub without the detrvilt package."""

from .configuration_detr import DetrConfig
from .configuration_detr_segmentation import DetrSegmentationConfig
from .loss_detr import DetrLoss, HungarianMatcher
from .modeling_detr import (
    DetrForObjectDetection,
    DetrModel,
    DetrModelOutput,
    DetrObjectDetectionOutput,
    DetrPreTrainedModel,
)
from .modeling_detr_segmentation import DetrForSegmentation, DetrSegmentationOutput

__all__ = [
    "DetrConfig",
    "DetrForObjectDetection",
    "DetrForSegmentation",
    "DetrLoss",
    "DetrModel",
    "DetrModelOutput",
    "DetrObjectDetectionOutput",
    "DetrPreTrainedModel",
    "DetrSegmentationConfig",
    "DetrSegmentationOutput",
    "HungarianMatcher",
]
