"""Registration of detrvilt's classes with transformers' Auto classes (done once, by ``import detrvilt``)."""

from transformers import AutoConfig, AutoModel, AutoModelForObjectDetection

from .modeling.detr import DetrConfig, DetrForObjectDetection, DetrModel

_registered = False


def register_auto_classes() -> None:
    """Make `AutoConfig`, `AutoModel` and `AutoModelForObjectDetection` know `model_type="detrvilt_detr"`."""
    global _registered
    if _registered:
        return
    AutoConfig.register(DetrConfig.model_type, DetrConfig, exist_ok=True)
    AutoModel.register(DetrConfig, DetrModel, exist_ok=True)
    AutoModelForObjectDetection.register(DetrConfig, DetrForObjectDetection, exist_ok=True)
    _registered = True
