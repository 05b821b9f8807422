"""Registration of detrvilt's classes with transformers' Auto classes (done once, by ``import detrvilt``)."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForObjectDetection,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
)

from .modeling.detr import DetrConfig, DetrForObjectDetection, DetrModel
from .modeling.detr.image_processing_detr import DetrviltDetrImageProcessor
from .modeling.vilt import ViltConfig, ViltForPreTraining, ViltForQuestionAnswering, ViltModel
from .modeling.vilt.image_processing_vilt import DetrviltViltImageProcessor
from .modeling.vilt.processing_vilt import DetrviltViltProcessor

_registered = False


def register_auto_classes() -> None:
    """Register every detrvilt config, model and processor with transformers' Auto classes (idempotent).

    DETR (`model_type="detrvilt_detr"`): AutoConfig, AutoModel, AutoModelForObjectDetection, AutoImageProcessor.
    ViLT (`model_type="detrvilt_vilt"`): AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForMaskedLM,
    AutoModelForVisualQuestionAnswering, AutoImageProcessor, AutoProcessor.
    """
    global _registered
    if _registered:
        return
    AutoConfig.register(DetrConfig.model_type, DetrConfig, exist_ok=True)
    AutoModel.register(DetrConfig, DetrModel, exist_ok=True)
    AutoModelForObjectDetection.register(DetrConfig, DetrForObjectDetection, exist_ok=True)
    # One class in both of transformers' backend slots (it runs on torchvision and has no PIL-only variant).
    AutoImageProcessor.register(DetrConfig, slow_image_processor_class=DetrviltDetrImageProcessor,
                                fast_image_processor_class=DetrviltDetrImageProcessor, exist_ok=True)
    # ViLT (model_type="detrvilt_vilt"): the pretraining model also serves masked LM (its `logits` are the MLM's).
    AutoConfig.register(ViltConfig.model_type, ViltConfig, exist_ok=True)
    AutoModel.register(ViltConfig, ViltModel, exist_ok=True)
    AutoModelForPreTraining.register(ViltConfig, ViltForPreTraining, exist_ok=True)
    AutoModelForMaskedLM.register(ViltConfig, ViltForPreTraining, exist_ok=True)
    AutoModelForVisualQuestionAnswering.register(ViltConfig, ViltForQuestionAnswering, exist_ok=True)
    AutoImageProcessor.register(ViltConfig, slow_image_processor_class=DetrviltViltImageProcessor,
                                fast_image_processor_class=DetrviltViltImageProcessor, exist_ok=True)
    AutoProcessor.register(ViltConfig, DetrviltViltProcessor, exist_ok=True)
    _registered = True
