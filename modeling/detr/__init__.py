"""DETR (Carion et al., 2020): configuration, model and Hungarian loss. Imports only torch, torchvision, timm,
scipy, numpy and transformers, so that these files load from the Hub without the detrvilt package."""

from .configuration_detr import DetrConfig
from .loss_detr import DetrLoss, HungarianMatcher
from .modeling_detr import (
    DetrForObjectDetection,
    DetrModel,
    DetrModelOutput,
    DetrObjectDetectionOutput,
    DetrPreTrainedModel,
)

__all__ = [
    "DetrConfig",
    "DetrForObjectDetection",
    "DetrLoss",
    "DetrModel",
    "DetrModelOutput",
    "DetrObjectDetectionOutput",
    "DetrPreTrainedModel",
    "HungarianMatcher",
]
