"""detrvilt on the Hub: registration with transformers' Auto classes and pipelines, and saving with remote code.

`register_auto_classes` (run once by ``import detrvilt``) does three things:

- registers every config, model and processor with the Auto classes (``AutoConfig.register``, ...), so folders load
  through the installed classes in a process that imports detrvilt;
- marks every one of those classes with transformers' ``register_for_auto_class`` (the ``_auto_class`` attribute).
  transformers' own save code then writes ``auto_map`` and copies the class's file, with every same-folder file it
  imports, next to the weights (``transformers.dynamic_module_utils.custom_object_save``) on *every* save:
  ``save_pretrained``, ``push_to_hub``, ``Trainer.save_model`` and Trainer checkpoints, ``Pipeline.save_pretrained``.
  Such a folder loads with ``trust_remote_code=True`` where detrvilt is not installed. It is a process-wide mark, and
  that is the point: a user saving the way transformers users do gets a shareable folder. transformers marks classes
  loaded from remote code the same way (``auto_factory``), so a folder loaded without detrvilt and saved again keeps
  its code too;
- registers ViLT's two pipelines (``modeling/vilt/pipeline_vilt.py``) with transformers' ``PIPELINE_REGISTRY``.

`save_for_hub` remains the one-call helper (model + processor, used by the training scripts, conversion and upload):
on top of what ``save_pretrained`` writes, its ``auto_map`` names every Auto class of the model type (a detection
folder also loads with ``AutoModel``), it copies the files of all those classes, and for ViLT it saves the pipelines
(the config's ``custom_pipelines`` and ``pipeline_vilt.py``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
import shutil
import sys
from pathlib import Path

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, PreTrainedModel
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.pipelines import PIPELINE_REGISTRY

from .modeling.detr import DetrConfig, DetrForObjectDetection, DetrForSegmentation, DetrModel, DetrSegmentationConfig
from .modeling.detr.image_processing_detr import DetrviltDetrImageProcessor
from .modeling.vilt import (
    ViltConfig,
    ViltForImageAndTextRetrieval,
    ViltForImagesAndTextClassification,
    ViltForPreTraining,
    ViltForQuestionAnswering,
    ViltModel,
)
from .modeling.vilt.image_processing_vilt import DetrviltViltImageProcessor
from .modeling.vilt.pipeline_vilt import ViltImageTextMatchingPipeline, ViltVisualQuestionAnsweringPipeline
from .modeling.vilt.processing_vilt import DetrviltViltProcessor

# The Auto classes (transformers' names) each model type loads through, locally (registration) and remotely (auto_map).
# The classes' `config_class` is the type's config. A new model type or task class is one more entry here.
AUTO_MODEL_CLASSES = {
    DetrConfig.model_type: {
        "AutoModel": DetrModel,
        "AutoModelForObjectDetection": DetrForObjectDetection,
    },
    # Panoptic DETR has its own config class (and model type); `AutoModel` stays with the detection config's DetrModel.
    DetrSegmentationConfig.model_type: {
        "AutoModelForImageSegmentation": DetrForSegmentation,
    },
    ViltConfig.model_type: {
        "AutoModel": ViltModel,
        "AutoModelForPreTraining": ViltForPreTraining,
        # The pretraining model also serves masked LM: its `logits` are the MLM's.
        "AutoModelForMaskedLM": ViltForPreTraining,
        "AutoModelForVisualQuestionAnswering": ViltForQuestionAnswering,
    },
}
# Saved task classes without an Auto class of their own: in a saved folder's auto_map only (remote code), since the
# local registration can map one config to one class per Auto class.
REMOTE_ONLY_AUTO_CLASSES = {
    ViltForImagesAndTextClassification: "AutoModelForSequenceClassification",
    ViltForImageAndTextRetrieval: "AutoModelForSequenceClassification",
}

# The pipelines of the ViLT heads: task -> (pipeline class, Auto classes tried in order to load the model). For
# image-text matching the retrieval head (AutoModelForSequenceClassification in a saved auto_map) comes first: a
# retrieval folder's auto_map also names ViltForPreTraining, which would load it with a new, random ITM head.
PIPELINES = {
    "visual-question-answering": (ViltVisualQuestionAnsweringPipeline, ("AutoModelForVisualQuestionAnswering",)),
    "image-text-matching": (ViltImageTextMatchingPipeline, ("AutoModelForSequenceClassification",
                                                            "AutoModelForPreTraining")),
}
# The pipelines saved with each model class (save_for_hub writes them into the config's `custom_pipelines`).
PIPELINE_TASKS = {
    ViltForQuestionAnswering: ("visual-question-answering",),
    ViltForPreTraining: ("image-text-matching",),
    ViltForImageAndTextRetrieval: ("image-text-matching",),
}
# Processors: the Auto class each is marked for.
PROCESSOR_AUTO_CLASSES = {
    DetrviltDetrImageProcessor: "AutoImageProcessor",
    DetrviltViltImageProcessor: "AutoImageProcessor",
    DetrviltViltProcessor: "AutoProcessor",
}

_MODELING_PACKAGE = f"{__package__}.modeling."
_registered = False


def save_auto_classes() -> dict[type, str]:
    """Every detrvilt class -> the Auto class `register_for_auto_class` marks it with: its first entry in
    `AUTO_MODEL_CLASSES` (so `DetrModel` -> `AutoModel`, `ViltForPreTraining` -> `AutoModelForPreTraining`), else its
    `REMOTE_ONLY_AUTO_CLASSES` entry; `AutoConfig` for the configs; `PROCESSOR_AUTO_CLASSES` for the processors."""
    marks = {}
    for classes in AUTO_MODEL_CLASSES.values():
        config_class = next(iter(classes.values())).config_class
        marks.setdefault(config_class, "AutoConfig")
        for auto_name, model_class in classes.items():
            marks.setdefault(model_class, auto_name)
    for model_class, auto_name in REMOTE_ONLY_AUTO_CLASSES.items():
        marks.setdefault(model_class, auto_name)
    marks.update(PROCESSOR_AUTO_CLASSES)
    return marks


def register_auto_classes() -> None:
    """Register every detrvilt config, model and processor with transformers' Auto classes (idempotent).

    DETR (`model_type="detrvilt_detr"`): AutoConfig, AutoModel, AutoModelForObjectDetection, AutoImageProcessor.
    Panoptic DETR (`model_type="detrvilt_detr_segmentation"`): AutoConfig, AutoModelForImageSegmentation,
    AutoImageProcessor.
    ViLT (`model_type="detrvilt_vilt"`): AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForMaskedLM,
    AutoModelForVisualQuestionAnswering, AutoImageProcessor, AutoProcessor.

    Every class is also marked with `register_for_auto_class` (see `save_auto_classes`), so that every save writes
    its remote code, and the `PIPELINES` are registered with transformers' `PIPELINE_REGISTRY`.
    """
    global _registered
    if _registered:
        return
    for model_type, classes in AUTO_MODEL_CLASSES.items():
        config_class = next(iter(classes.values())).config_class
        AutoConfig.register(model_type, config_class, exist_ok=True)
        for auto_name, model_class in classes.items():
            getattr(transformers, auto_name).register(config_class, model_class, exist_ok=True)
    # One class in both of transformers' backend slots (it runs on torchvision and has no PIL-only variant).
    for config_class in (DetrConfig, DetrSegmentationConfig):
        AutoImageProcessor.register(config_class, slow_image_processor_class=DetrviltDetrImageProcessor,
                                    fast_image_processor_class=DetrviltDetrImageProcessor, exist_ok=True)
    AutoImageProcessor.register(ViltConfig, slow_image_processor_class=DetrviltViltImageProcessor,
                                fast_image_processor_class=DetrviltViltImageProcessor, exist_ok=True)
    AutoProcessor.register(ViltConfig, DetrviltViltProcessor, exist_ok=True)
    for cls, auto_name in save_auto_classes().items():
        cls.register_for_auto_class(auto_name)
    for task, (pipeline_class, auto_names) in PIPELINES.items():
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, type="multimodal",
                                            pt_model=tuple(getattr(transformers, name) for name in auto_names))
    _registered = True


def _reference(cls: type) -> str:
    """``"<module file>.<class>"``, the form of an auto_map entry for code in the same folder."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def _source_file(cls: type) -> Path:
    return Path(sys.modules[cls.__module__].__file__)


def remote_code_auto_map(model: PreTrainedModel) -> dict[str, str]:
    """The ``auto_map`` of `model`'s config: AutoConfig and every Auto class of its model type, plus the saved
    class's own task Auto class (e.g. ``{"AutoConfig": "configuration_detr.DetrConfig", "AutoModel":
    "modeling_detr.DetrModel", "AutoModelForObjectDetection": "modeling_detr.DetrForObjectDetection"}``)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in AUTO_MODEL_CLASSES:
        raise TypeError(f"model must be a detrvilt model ({sorted(AUTO_MODEL_CLASSES)}), got model_type {model_type!r}")
    auto_map = {"AutoConfig": _reference(type(model.config))}
    auto_map.update({name: _reference(cls) for name, cls in AUTO_MODEL_CLASSES[model_type].items()})
    if type(model) in REMOTE_ONLY_AUTO_CLASSES:
        auto_map[REMOTE_ONLY_AUTO_CLASSES[type(model)]] = _reference(type(model))
    elif type(model) not in AUTO_MODEL_CLASSES[model_type].values():
        raise TypeError(f"{type(model).__name__} has no Auto class in detrvilt.hub.AUTO_MODEL_CLASSES; add it there")
    return auto_map


def copy_remote_code(classes, output_dir: str | os.PathLike) -> list[str]:
    """Copy the files defining `classes` and everything they import relatively (same folder) into `output_dir`.

    Returns:
        The copied file names, sorted.
    """
    files = set()
    for cls in classes:
        source = _source_file(cls)
        files.add(source)
        files.update(Path(f) for f in get_relative_import_files(source))
    for path in files:
        if path.parent != _source_file(classes[0]).parent:
            raise ValueError(f"remote code must come from one folder, got {path} beside {_source_file(classes[0])}")
        shutil.copyfile(path, Path(output_dir) / path.name)
    return sorted(path.name for path in files)


def custom_pipelines(model: PreTrainedModel) -> dict[str, dict]:
    """The config's ``custom_pipelines`` entry for `model`'s pipelines (see `PIPELINE_TASKS`), in the form
    transformers' ``Pipeline.save_pretrained`` writes: ``{task: {"impl": "pipeline_vilt.<class>", "pt": [<Auto class
    names>], "type": "multimodal"}}``; empty for a model without pipelines of its own (DETR uses transformers'
    ``object-detection`` and ``image-segmentation`` pipelines)."""
    entries = {}
    for task in PIPELINE_TASKS.get(type(model), ()):
        pipeline_class, auto_names = PIPELINES[task]
        entries[task] = {"impl": _reference(pipeline_class), "pt": list(auto_names), "type": "multimodal"}
    return entries


def save_for_hub(model: PreTrainedModel, processor=None, output_dir: str | os.PathLike = ".",
                 safe_serialization: bool = True) -> list[str]:
    """Save `model` (and `processor`) into `output_dir` so that the folder loads with or without detrvilt.

    With ``import detrvilt`` the Auto classes use the installed code; elsewhere
    ``AutoModel*.from_pretrained(output_dir, trust_remote_code=True)``, ``AutoImageProcessor`` and ``AutoProcessor``
    (same flag) import the copied ``configuration_*.py`` / ``modeling_*.py`` / ``image_processing_*.py`` files.
    Beyond what ``model.save_pretrained`` writes (which also carries the code), ``auto_map`` names every Auto class
    of the model type, and a ViLT VQA, pretraining or retrieval model carries its pipeline (``custom_pipelines`` and
    ``pipeline_vilt.py``): ``transformers.pipeline(task, model=output_dir, trust_remote_code=True)``.

    Args:
        model: a detrvilt DETR or ViLT model.
        processor: a processor class of ``modeling/`` ([`DetrviltDetrImageProcessor`], [`DetrviltViltImageProcessor`],
            [`DetrviltViltProcessor`], ...), or `None` to save the model alone.
        output_dir: the folder (created if missing).

    Returns:
        The names of the files in `output_dir` afterwards, sorted.
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    if processor is not None and not type(processor).__module__.startswith(_MODELING_PACKAGE):
        raise TypeError(f"processor must be a detrvilt image processor or processor (from {_MODELING_PACKAGE}*), got "
                        f"{type(processor).__module__}.{type(processor).__name__}")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    register_auto_classes()
    # save_pretrained (with the classes marked by register_for_auto_class) adds the saved class's own entries to
    # config.auto_map and copies its files; the full map and the pipelines are set around it, then taken off again.
    settings = {"auto_map": remote_code_auto_map(model), "custom_pipelines": custom_pipelines(model)}
    previous = {key: model.config.__dict__[key] for key in settings if key in model.config.__dict__}
    for key, value in settings.items():
        if value:
            setattr(model.config, key, value)
        elif key in previous:
            delattr(model.config, key)
    try:
        model.save_pretrained(output, safe_serialization=safe_serialization)
    finally:
        for key in settings:
            if key in previous:
                setattr(model.config, key, previous[key])
            elif key in model.config.__dict__:
                delattr(model.config, key)
    model_classes = [type(model.config), type(model)]
    model_classes += [cls for cls in AUTO_MODEL_CLASSES[model.config.model_type].values() if cls not in model_classes]
    model_classes += [PIPELINES[task][0] for task in PIPELINE_TASKS.get(type(model), ())]
    copy_remote_code(model_classes, output)
    if processor is not None:
        # The processor classes are marked too: save_pretrained writes their auto_map (a ViLT processor's also inside
        # processor_config.json's image_processor entry, where AutoImageProcessor reads it) and copies their files.
        # A DETR folder gets no AutoProcessor entry: AutoProcessor falls back to AutoImageProcessor by itself, and an
        # entry would make transformers ask whether to trust remote code in a process that has detrvilt.
        processor.save_pretrained(output)
    return sorted(path.name for path in output.iterdir())


# ----------------------------------------------------------------------------------------------------- model cards

# The templates are the repository's hub_cards/, installed as the package data `detrvilt.hub_cards` (setup.cfg), so a
# wheel carries them too; pass `template_dir` to use others.
CARD_TEMPLATES = Path(str(importlib.resources.files("detrvilt.hub_cards")))
# Evaluation keys that go into the model-index, with the names shown on the Hub.
_DETR_METRICS = {"map": "mAP", "map_50": "mAP@0.5", "map_75": "mAP@0.75", "map_small": "mAP (small)",
                 "map_medium": "mAP (medium)", "map_large": "mAP (large)", "mar_1": "mAR@1", "mar_10": "mAR@10",
                 "mar_100": "mAR@100"}
# Per ViLT architecture: (pipeline tag, model-index task type, Auto class to load it with, head in words).
_VILT_TASKS = {
    "ViltForQuestionAnswering": ("visual-question-answering", "visual-question-answering",
                                 "AutoModelForVisualQuestionAnswering", "VQAv2 answer classifier (VQA score)"),
    "ViltForPreTraining": ("fill-mask", "fill-mask", "AutoModelForPreTraining",
                           "masked language modeling and image-text matching (pretraining)"),
    "ViltForImagesAndTextClassification": (None, "visual-reasoning", "AutoModelForSequenceClassification",
                                           "NLVR2 true/false classifier over two images and a sentence"),
    "ViltForImageAndTextRetrieval": (None, "image-text-retrieval", "AutoModelForSequenceClassification",
                                     "image-text matching score for retrieval"),
    "ViltModel": ("feature-extraction", "feature-extraction", "AutoModel", "none (pooled features)"),
}
# Hyper-parameters shown on the card, in this order, from a training summary's argument groups (DETR's and ViLT's
# recipes' names).
_HYPERPARAMETERS = (
    "task", "learning_rate", "backbone_learning_rate", "head_lr_multiplier", "weight_decay", "adam_epsilon",
    "max_grad_norm", "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "num_processes", "warmup_steps", "warmup", "lr_drop_step", "lr_drop_gamma", "mixed_precision", "seed", "backbone",
    "use_pretrained_backbone", "vit", "use_pretrained_vit", "dilation", "num_queries", "auxiliary_loss",
    "eos_coefficient", "dropout", "hidden_dropout_prob", "pretraining_objectives", "mlm_probability",
    "max_image_length", "max_text_length", "dataset", "synthetic_train_size", "synthetic_eval_size",
    "synthetic_image_size", "shortest_edge", "augment", "train_seconds",
)


def training_facts(summary: dict) -> tuple[dict, dict]:
    """`(hyper_parameters, eval_results)` from a run's ``train_summary.json`` (what the training recipes write:
    argument groups ``model_args`` / ``data_args`` / ``train_args`` and ``eval``, the metric values)."""
    if not isinstance(summary, dict):
        raise TypeError(f"summary must be a dict (train_summary.json), got {type(summary).__name__}")
    merged = {}
    for group in ("model_args", "data_args", "train_args", "training_args"):
        merged.update({k: v for k, v in (summary.get(group) or {}).items() if v is not None})
    for key in ("num_processes", "train_seconds"):
        if summary.get(key) is not None:
            merged[key] = round(summary[key], 1) if key == "train_seconds" else summary[key]
    hyper_parameters = {k: merged[k] for k in _HYPERPARAMETERS if k in merged}
    results = {k.removeprefix("eval_"): v for k, v in (summary.get("eval") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return hyper_parameters, results


def _table(rows: dict, header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {k} | {round(v, 4) if isinstance(v, float) else v} |" for k, v in rows.items()]
    return "\n".join(lines)


def render_model_card(config, repo_id: str, hyper_parameters: dict | None = None, eval_results: dict | None = None,
                      dataset_name: str = "synthetic", dataset_id: str | None = None, dataset_split: str = "validation",
                      variant: str | None = None, training_text: str | None = None, license: str = "apache-2.0",
                      limitations: str | None = None, processor=None, template_dir: str | os.PathLike | None = None):
    """Render `hub_cards/detr.md` or `hub_cards/vilt.md` into a `huggingface_hub.ModelCard`.

    Args:
        config: the model's [`DetrConfig`] or [`ViltConfig`] (its `architectures` picks the ViLT task).
        repo_id: the Hub repository the card describes (used in the loading examples).
        hyper_parameters, eval_results: e.g. from [`training_facts`]; the numeric `eval_results` also fill the
            YAML `model-index` (DETR: the COCO metrics `map`, `map_50`, ...; ViLT: every number given).
        dataset_name / dataset_id / dataset_split: the evaluation data (name shown; Hub dataset id for the metadata,
            when there is one).
        variant, training_text, limitations: free text for the card's sections.
        processor: the saved processor, for the input sizes it states.
        template_dir: the folder holding `detr.md` / `vilt.md` (default: the package's `hub_cards/`).

    Returns:
        `huggingface_hub.ModelCard` whose `.data` holds the metadata and `str()` the Markdown with its YAML header.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_type = getattr(config, "model_type", None)
    if model_type not in AUTO_MODEL_CLASSES:
        raise TypeError(f"config must be a detrvilt DetrConfig or ViltConfig, got model_type {model_type!r}")
    hyper_parameters, eval_results = dict(hyper_parameters or {}), dict(eval_results or {})
    is_detr = model_type == DetrConfig.model_type
    architecture = (getattr(config, "architectures", None) or ["DetrForObjectDetection" if is_detr else "ViltModel"])[0]
    if is_detr:
        pipeline_tag, task_type, metric_names = "object-detection", "object-detection", _DETR_METRICS
        extra = dict(backbone=config.backbone, encoder_layers=config.encoder_layers, num_queries=config.num_queries,
                     decoder_layers=config.decoder_layers, d_model=config.d_model, num_labels=config.num_labels,
                     class_names=", ".join(str(config.id2label[i]) for i in sorted(config.id2label)))
    else:
        if architecture not in _VILT_TASKS:
            raise ValueError(f"config.architectures must name a detrvilt ViLT class, got {architecture!r}")
        pipeline_tag, task_type, auto_class, head = _VILT_TASKS[architecture]
        metric_names = {k: k for k in eval_results}
        image_processor = getattr(processor, "image_processor", processor)
        extra = dict(patch_size=config.patch_size, num_hidden_layers=config.num_hidden_layers,
                     hidden_size=config.hidden_size, head=head, auto_class=auto_class,
                     max_text_length=getattr(processor, "max_length", 40),
                     shortest_edge=getattr(image_processor, "shortest_edge", 384))
    # pycocotools reports -1 for an area range without objects: not a result, so not in the metadata.
    reported = [key for key in metric_names if key in eval_results and eval_results[key] >= 0]
    index = [EvalResult(task_type=task_type, dataset_type=dataset_id or dataset_name, dataset_name=dataset_name,
                        dataset_split=dataset_split, metric_type=key, metric_name=metric_names[key],
                        metric_value=float(eval_results[key])) for key in reported]
    family = "detr" if is_detr else "vilt"
    template = Path(template_dir or CARD_TEMPLATES) / f"{family}.md"
    if not template.is_file():
        raise ValueError(f"template_dir must hold the card template {family}.md, not found: {template}")
    card_data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag=pipeline_tag,
        tags=["detrvilt", family, "custom_code", *([task_type] if task_type != pipeline_tag else [])],
        datasets=[dataset_id] if dataset_id else None, metrics=reported or None,
        model_name=repo_id.split("/")[-1], eval_results=index or None,
    )
    if eval_results:
        eval_text = f"On {dataset_name} ({dataset_split} split), measured at the end of training:"
        eval_table = _table({metric_names.get(k, k): v if v >= 0 else "n/a (no such objects)"
                             for k, v in eval_results.items()}, ("metric", "value"))
    else:
        eval_text, eval_table = "Not evaluated: no evaluation results were given when this card was written.", ""
    return ModelCard.from_template(
        card_data, template_path=str(template), repo_id=repo_id,
        model_name=repo_id.split("/")[-1], variant=variant or f"trained with detrvilt on {dataset_name}",
        training_text=training_text or ("Trained with detrvilt; hyper-parameters of the run:" if hyper_parameters
                                        else "No training record was given."),
        hyperparameter_table=_table(hyper_parameters, ("hyper-parameter", "value")) if hyper_parameters else "",
        eval_text=eval_text, eval_table=eval_table,
        limitations=limitations or "Check the evaluation data and numbers above before relying on it elsewhere.",
        **extra,
    )


# ---------------------------------------------------------------------------------------------------------- upload

UPLOADED_EXTRAS = ("train_summary.json",)


def load_for_hub(folder: str | os.PathLike):
    """The detrvilt model (class from `config.json`'s `architectures`) and processor saved in a training folder."""
    import detrvilt

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    architecture = (config.get("architectures") or [None])[0]
    model_class = getattr(detrvilt, str(architecture), None)
    if model_class is None or not isinstance(model_class, type) or not issubclass(model_class, PreTrainedModel):
        raise ValueError(f"{folder}/config.json: architectures must name a detrvilt model, got {architecture!r}")
    model = model_class.from_pretrained(folder)
    processor = None
    if (folder / "processor_config.json").is_file():
        processor = AutoProcessor.from_pretrained(folder)
    elif (folder / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(folder)
    return model, processor


def stage_for_upload(folder: str | os.PathLike, staging_dir: str | os.PathLike, repo_id: str, **card_kwargs) -> list:
    """Write into `staging_dir` exactly what `push_to_hub` uploads for the training output `folder`: the model and
    processor with remote code ([`save_for_hub`]), `README.md` (the card, from the folder's `train_summary.json`
    when there is one) and `train_summary.json`. Returns the staged file names, sorted.

    Args:
        card_kwargs: passed to [`render_model_card`] (`dataset_name`, `dataset_id`, `license`, ...).
    """
    folder, staging = Path(folder), Path(staging_dir)
    if not (folder / "config.json").is_file():
        raise ValueError(f"folder must be a saved model folder (with config.json), got {folder}")
    if staging.exists() and any(staging.iterdir()):
        raise ValueError(f"staging_dir must be empty or new, got {staging} with files in it")
    model, processor = load_for_hub(folder)
    save_for_hub(model, processor, staging)
    summary_file = folder / "train_summary.json"
    hyper_parameters, results = training_facts(json.loads(summary_file.read_text())) if summary_file.is_file() else (
        {}, {})
    card = render_model_card(model.config, repo_id, hyper_parameters, results, processor=processor, **card_kwargs)
    card.save(staging / "README.md")
    for name in UPLOADED_EXTRAS:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, staging / name)
    return sorted(path.name for path in staging.iterdir())


# ----------------------------------------------------------------------------------------------------------- Space

# The Space's app.py: the app of `detrvilt.space` on the model repository.
_SPACE_APP = '''"""Try {repo_id} in the browser: the detrvilt Space app (staged by scripts/push_to_hub.py)."""

from detrvilt.space import build_app, load_space_model

app = build_app(load_space_model("{repo_id}"), threshold={threshold})

if __name__ == "__main__":
    app.launch()
'''
DEFAULT_SPACE_REQUIREMENT = "detrvilt[space]"


def space_folder_name(dry_run_dir: str | os.PathLike) -> Path:
    """Where a dry run stages the Space: next to the model's staging folder, ``<dry_run_dir>_space``."""
    path = Path(dry_run_dir)
    return path.with_name(path.name + "_space")


def stage_space(repo_id: str, space_dir: str | os.PathLike, family: str, threshold: float = 0.7,
                requirement: str = DEFAULT_SPACE_REQUIREMENT, title: str | None = None) -> list[str]:
    """Write a Gradio Space folder that shows the model repository `repo_id` with detrvilt's app (`detrvilt.space`).

    Files: ``app.py`` (loads `repo_id` and builds the app), ``requirements.txt`` (`requirement`, the pip line that
    installs detrvilt with its `space` extra: ``detrvilt[space]`` once it is on an index, else e.g.
    ``detrvilt[space] @ git+https://github.com/<you>/detrvilt``) and ``README.md`` (the Space's front matter:
    ``sdk: gradio``, the installed Gradio version, ``app_file: app.py``, ``models: [repo_id]``).

    Args:
        family (`str`): ``"detr"`` or ``"vilt"`` (for the title and tags).
        threshold (`float`): DETR's score threshold the app starts with.

    Returns:
        The staged file names, sorted.
    """
    from huggingface_hub import SpaceCard, SpaceCardData

    if family not in ("detr", "vilt"):
        raise ValueError(f"family must be 'detr' or 'vilt', got {family!r}")
    if not isinstance(requirement, str) or not requirement.strip() or "\n" in requirement:
        raise ValueError(f"requirement must be one pip requirement line, got {requirement!r}")
    space = Path(space_dir)
    if space.exists() and any(space.iterdir()):
        raise ValueError(f"space_dir must be empty or new, got {space} with files in it")
    space.mkdir(parents=True, exist_ok=True)
    try:
        gradio_version = importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:  # the Space then gets the Hub's default Gradio
        gradio_version = None
    title = title or f"{repo_id.split('/')[-1]} ({family.upper()})"
    data = SpaceCardData(title=title[:60], sdk="gradio", sdk_version=gradio_version, app_file="app.py",
                         models=[repo_id], tags=["detrvilt", family], emoji="🔎" if family == "detr" else "💬",
                         colorFrom="indigo", colorTo="gray", pinned=False, license="apache-2.0")
    body = (f"# {title}\n\nThe detrvilt app for [{repo_id}](https://huggingface.co/{repo_id}): "
            + ("upload an image to see the detected boxes and, for a chosen box, where its object query looked."
               if family == "detr" else "upload an image and ask a question: the top answers and the word-patch "
               "alignment of its words.") + "\n")
    SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(space / "README.md")
    (space / "app.py").write_text(_SPACE_APP.format(repo_id=repo_id, threshold=float(threshold)))
    (space / "requirements.txt").write_text(requirement.strip() + "\n")
    return sorted(path.name for path in space.iterdir())


def push_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = True, commit_message: str | None = None,
                revision: str | None = None, dry_run_dir: str | os.PathLike | None = None, space_id: str | None = None,
                space_requirement: str = DEFAULT_SPACE_REQUIREMENT, space_threshold: float = 0.7,
                **card_kwargs) -> dict:
    """Stage a training output folder (see [`stage_for_upload`]) and upload it with `huggingface_hub`; with
    `space_id`, also a Gradio Space that shows it (see [`stage_space`]).

    The token comes from `huggingface_hub`'s usual places (the ``HF_TOKEN`` variable or ``hf auth login``); it is
    never passed, printed or written here. With `dry_run_dir`, the staged files stay there (the Space's in
    ``<dry_run_dir>_space``) and nothing is sent.

    Returns:
        `{"repo_id", "private", "revision", "commit_message", "files", "dry_run", "commit_url"}`, plus `"space"`:
        `{"repo_id", "files", "dir" (dry run), "commit_url"}` when `space_id` is given.
    """
    import tempfile

    from huggingface_hub import HfApi

    commit_message = commit_message or f"Upload {repo_id.split('/')[-1]} (detrvilt)"
    plan = {"repo_id": repo_id, "private": private, "revision": revision, "commit_message": commit_message,
            "dry_run": dry_run_dir is not None, "commit_url": None}
    if space_id is not None and space_id.count("/") != 1:
        raise ValueError(f"space_id must be 'owner/name', got {space_id!r}")

    def stage_both(model_dir, space_dir):
        plan["files"] = stage_for_upload(folder, model_dir, repo_id, **card_kwargs)
        if space_id is not None:
            config = json.loads((Path(model_dir) / "config.json").read_text())
            family = "detr" if config.get("model_type", "").startswith(DetrConfig.model_type) else "vilt"
            plan["space"] = {"repo_id": space_id, "commit_url": None,
                             "files": stage_space(repo_id, space_dir, family, space_threshold, space_requirement)}

    if dry_run_dir is not None:
        stage_both(dry_run_dir, space_folder_name(dry_run_dir))
        if space_id is not None:
            plan["space"]["dir"] = str(space_folder_name(dry_run_dir))
        return plan
    with tempfile.TemporaryDirectory() as staging, tempfile.TemporaryDirectory() as space_staging:
        stage_both(staging, space_staging)
        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(folder_path=staging, repo_id=repo_id, commit_message=commit_message,
                                   revision=revision)
        plan["commit_url"] = str(getattr(commit, "commit_url", commit))
        if space_id is not None:
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            commit = api.upload_folder(folder_path=space_staging, repo_id=space_id, repo_type="space",
                                       commit_message=f"App for {repo_id} (detrvilt)")
            plan["space"]["commit_url"] = str(getattr(commit, "commit_url", commit))
    return plan


__all__ = [
    "AUTO_MODEL_CLASSES",
    "PIPELINES",
    "PIPELINE_TASKS",
    "custom_pipelines",
    "save_auto_classes",
    "load_for_hub",
    "push_to_hub",
    "space_folder_name",
    "stage_space",
    "stage_for_upload",
    "copy_remote_code",
    "register_auto_classes",
    "remote_code_auto_map",
    "render_model_card",
    "save_for_hub",
    "training_facts",
]
