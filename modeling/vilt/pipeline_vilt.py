"""ViLT's two pipelines: visual question answering, and image-text matching (one score per image-text pair).

transformers 5 removed its ``visual-question-answering`` task; these classes bring it back for ViLT as custom
pipelines. ``import detrvilt`` registers them with transformers' ``PIPELINE_REGISTRY`` (``detrvilt.hub``), and
``detrvilt.hub.save_for_hub`` saves this file next to the model with the config's ``custom_pipelines`` entry, so that
``transformers.pipeline("visual-question-answering", model=folder, trust_remote_code=True)`` (or
``"image-text-matching"``) loads them from the folder where detrvilt is not installed.

- [`ViltVisualQuestionAnsweringPipeline`]: an image and a question in, the `top_k` answers out, each scored by the
  sigmoid of its logit (the VQA head is trained with binary cross-entropy against soft scores, Kim et al., 2021,
  section 4.2, so each answer's probability stands on its own; they do not sum to 1).
- [`ViltImageTextMatchingPipeline`]: an image and one or several texts in, one score per pair out. With the
  pretraining model the score is the ITM head's probability of "matched"; with the retrieval model it is the rank
  head's logit (trained with cross-entropy over candidate texts: compare scores of the same model, higher = better).

Batched calls (``batch_size``) pad the images of a batch bottom/right with zeros and a zero ``pixel_mask``, as the
image processor pads its own batches, so an answer does not depend on the other pairs of its batch (transformers'
generic collation concatenates images and cannot batch images of different sizes).

This file travels to the Hub with the model, so it imports only torch and transformers.
"""

from collections.abc import Sized

import torch
from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.image_utils import load_image
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

# Model inputs that have one text row per pair, padded on the right with these values when a batch is collated.
_TEXT_PADDING = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}
_IMAGE_KEYS = ("pixel_values", "pixel_mask")


def _pairs(image, text, text_name: str) -> list[dict] | dict:
    """`{"image", "text"}` pairs from an image (or a list) and a text (or a list): lists of equal length pair up,
    a single image or text goes with every element of the other list. Returns a dict for a single pair."""
    if isinstance(image, dict) and text is None:
        return image
    if isinstance(image, list) and text is None:
        if not all(isinstance(item, dict) for item in image):
            raise ValueError(f"give {text_name}, or pass a list of dicts with 'image' and '{text_name}'")
        return image
    if text is None:
        raise ValueError(f"{text_name} is missing: give an image and a {text_name}, or dicts with both")
    images, texts = isinstance(image, (list, tuple)), isinstance(text, (list, tuple))
    if images and texts and len(image) != len(text):
        raise ValueError(f"got {len(image)} images and {len(text)} values of {text_name}: give one per image, "
                         "or one image for all")
    if not images and not texts:
        return {"image": image, "text": text}
    count = len(image) if images else len(text)
    return [{"image": image[i] if images else image, "text": text[i] if texts else text} for i in range(count)]


def _text_of(item: dict, text_name: str) -> str:
    text = item.get("text", item.get(text_name))
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{text_name} must be a non-empty string, got {text!r}")
    if "image" not in item:
        raise ValueError(f"each input needs an 'image', got keys {sorted(item)}")
    return text


def _reject_unknown(kwargs: dict, known: tuple) -> None:
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}; this pipeline takes {', '.join(known)} (and "
                        "transformers' batch_size, num_workers)")


class _ViltPairPipeline(Pipeline):
    """What both pipelines share: (image, text) pairs through the processor, and batches padded like the processor's."""

    _load_processor = True
    _load_image_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False
    _text_name = "text"

    def _check_processor(self):
        if self.processor is None:
            raise ValueError(f"{type(self).__name__} needs a ViLT processor (image processor + tokenizer): pass "
                             "processor=..., or load a folder saved with one")

    def preprocess(self, inputs, timeout=None):
        self._check_processor()
        text = _text_of(inputs, self._text_name)
        image = load_image(inputs["image"], timeout=timeout)
        encoding = self.processor(images=image, text=text, return_tensors="pt")
        features = {key: encoding[key] for key in (*_TEXT_PADDING, *_IMAGE_KEYS) if key in encoding}
        if "pixel_mask" not in features:  # an unpadded single image: every pixel is real
            pixel_values = features["pixel_values"]
            features["pixel_mask"] = torch.ones(pixel_values.shape[0], *pixel_values.shape[-2:], dtype=torch.long)
        features["text"] = [text]
        return features

    def collate(self, items: list[dict]) -> dict:
        """One batch from single-pair features: texts padded right, images padded bottom/right (pixel_mask 0)."""
        batch = {"text": [item["text"][0] for item in items]}
        for key, value in _TEXT_PADDING.items():
            if key not in items[0]:
                continue
            pad = self.processor.tokenizer.pad_token_id if value is None else value
            length = max(item[key].shape[1] for item in items)
            rows = torch.full((len(items), length), pad, dtype=items[0][key].dtype)
            for i, item in enumerate(items):
                rows[i, : item[key].shape[1]] = item[key][0]
            batch[key] = rows  # (B, T)
        height = max(item["pixel_values"].shape[-2] for item in items)
        width = max(item["pixel_values"].shape[-1] for item in items)
        pixel_values = items[0]["pixel_values"].new_zeros((len(items), 3, height, width))
        pixel_mask = items[0]["pixel_mask"].new_zeros((len(items), height, width))
        for i, item in enumerate(items):
            h, w = item["pixel_values"].shape[-2:]
            pixel_values[i, :, :h, :w] = item["pixel_values"][0]
            pixel_mask[i, :h, :w] = item["pixel_mask"][0]
        batch["pixel_values"], batch["pixel_mask"] = pixel_values, pixel_mask  # (B, 3, H, W), (B, H, W)
        return batch

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        if batch_size == 1:
            return super().get_iterator(inputs, num_workers, batch_size, preprocess_params, forward_params,
                                        postprocess_params)
        if isinstance(inputs, Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self.collate)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def save_pretrained(self, save_directory, **kwargs):
        """transformers' `Pipeline.save_pretrained` (the model, this file and the config's `custom_pipelines`), plus
        the processor, which it leaves out (it saves only a tokenizer, image processor or feature extractor)."""
        super().save_pretrained(save_directory, **kwargs)
        if self.processor is not None:
            self.processor.save_pretrained(save_directory)

    @staticmethod
    def _model_inputs(model_inputs: dict) -> dict:
        return {key: value for key, value in model_inputs.items() if key != "text"}


class ViltVisualQuestionAnsweringPipeline(_ViltPairPipeline):
    """Answers to questions about images with a ViLT VQA model (`ViltForQuestionAnswering`).

    Call with `(image, question)`: an image (PIL image, path or URL) or a list, and a question or a list (lists of
    equal length pair up; one image or question goes with every element of the other list), or with
    `{"image": ..., "question": ...}` dicts.

    Args:
        top_k (`int`, *optional*, defaults to 5): how many answers to return per question (at most `num_labels`).
        timeout (`float`, *optional*): seconds to wait for an image URL.

    Returns:
        For one pair, a list of `top_k` dicts `{"answer": str, "score": float}` by decreasing score; for several, a
        list of such lists.
    """

    _text_name = "question"

    def __call__(self, image, question=None, **kwargs):
        return super().__call__(_pairs(image, question, "question"), **kwargs)

    def _sanitize_parameters(self, top_k=None, timeout=None, **kwargs):
        _reject_unknown(kwargs, ("top_k", "timeout"))
        postprocess = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
            postprocess["top_k"] = top_k
        return ({} if timeout is None else {"timeout": timeout}), {}, postprocess

    def _forward(self, model_inputs):
        outputs = self.model(**self._model_inputs(model_inputs), return_dict=True)
        return {"logits": outputs.logits, "text": model_inputs["text"]}  # (B, num_labels)

    def postprocess(self, model_outputs, top_k=5):
        probabilities = model_outputs["logits"][0].float().sigmoid()  # (num_labels,)
        scores, indices = probabilities.topk(min(top_k, probabilities.shape[-1]))
        id2label = self.model.config.id2label
        return [{"answer": id2label.get(i, str(i)), "score": float(s)}
                for s, i in zip(scores.tolist(), indices.tolist(), strict=True)]


class ViltImageTextMatchingPipeline(_ViltPairPipeline):
    """How well texts describe images, with ViLT's ITM head (`ViltForPreTraining`) or its retrieval rank head
    (`ViltForImageAndTextRetrieval`).

    Call with `(image, text)` (single values or lists, paired as in [`ViltVisualQuestionAnsweringPipeline`]) or with
    `{"image": ..., "text": ...}` dicts. For retrieval, pass one image and the candidate texts and sort by score.

    Returns:
        For one pair, `{"text": str, "score": float}`: the probability that image and text match (ITM head), or the
        rank logit (retrieval head; higher = better match); for several pairs, a list of such dicts in input order.
    """

    def __call__(self, image, text=None, **kwargs):
        return super().__call__(_pairs(image, text, "text"), **kwargs)

    def _sanitize_parameters(self, timeout=None, **kwargs):
        _reject_unknown(kwargs, ("timeout",))
        return ({} if timeout is None else {"timeout": timeout}), {}, {}

    def _forward(self, model_inputs):
        inputs = self._model_inputs(model_inputs)
        name = type(self.model).__name__
        if name == "ViltForImageAndTextRetrieval":
            scores = self.model(**inputs, return_dict=True).logits[:, 0]  # (B,)
        elif name == "ViltForPreTraining":
            objectives = getattr(self.model.config, "pretraining_objectives", ())
            if "itm" not in objectives:
                raise ValueError(f"image-text matching needs the ITM head: 'itm' is not in the model's "
                                 f"pretraining_objectives={list(objectives)}")
            scores = self.model(**inputs, return_dict=True).itm_logits.float().softmax(-1)[:, 1]  # (B,)
        else:
            raise TypeError(f"the image-text-matching pipeline needs a ViltForPreTraining (ITM head) or a "
                            f"ViltForImageAndTextRetrieval, got {name}")
        return {"scores": scores, "text": model_inputs["text"]}

    def postprocess(self, model_outputs):
        return {"text": model_outputs["text"][0] if isinstance(model_outputs["text"], list) else model_outputs["text"],
                "score": float(model_outputs["scores"].reshape(-1)[0])}


__all__ = ["ViltImageTextMatchingPipeline", "ViltVisualQuestionAnsweringPipeline"]
