"""ViLT (Kim et al., 2021): configuration, model, pretraining objectives (MLM, ITM, WPA) and downstream heads.
Imports only torch, timm and transformers, so that these files load from the Hub without the detrvilt package."""

from .configuration_vilt import ViltConfig
from .heads_vilt import (
    ViltClassificationOutput,
    ViltForImageAndTextRetrieval,
    ViltForImagesAndTextClassification,
    ViltForPreTraining,
    ViltForPreTrainingOutput,
    ViltForQuestionAnswering,
)
from .modeling_vilt import ViltModel, ViltModelOutput, ViltPreTrainedModel
from .timm_vilt import convert_timm_vit_state_dict, load_timm_vit_weights
from .wpa_vilt import ipot_plan, wpa_distance, wpa_loss

__all__ = [
    "ViltClassificationOutput",
    "ViltConfig",
    "ViltForImageAndTextRetrieval",
    "ViltForImagesAndTextClassification",
    "ViltForPreTraining",
    "ViltForPreTrainingOutput",
    "ViltForQuestionAnswering",
    "ViltModel",
    "ViltModelOutput",
    "ViltPreTrainedModel",
    "convert_timm_vit_state_dict",
    "ipot_plan",
    "load_timm_vit_weights",
    "wpa_distance",
    "wpa_loss",
]
