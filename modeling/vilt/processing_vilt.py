"""ViLT's processor: the image processor and a BERT uncased WordPiece tokenizer (texts of at most 40 tokens).

Kim et al., 2021 (ViLT) use bert-base-uncased's tokenizer with ``max_text_len = 40``. ``DetrviltViltProcessor``
(exported as ``detrvilt.ViltProcessor``) pairs [`DetrviltViltImageProcessor`] with any fast BERT tokenizer; texts are
padded to `max_length` (40) and truncated by default, as in the official data modules. Saved with `save_pretrained`,
it loads with ``AutoProcessor.from_pretrained`` after ``import detrvilt``. The offline default tokenizer (the
bert-base-uncased vocabulary from an installed package) is resolved outside this Hub folder, in
``detrvilt.data.default_vilt_tokenizer`` / ``detrvilt.data.default_vilt_processor``.

This file travels to the Hub with the model, so it imports only transformers and same-folder modules.
"""

from transformers import BatchFeature, ProcessorMixin

from .image_processing_vilt import DetrviltViltImageProcessor

MAX_TEXT_LENGTH = 40


class DetrviltViltProcessor(ProcessorMixin):
    r"""Image processor + tokenizer for ViLT.

    Args:
        image_processor ([`DetrviltViltImageProcessor`]): the images.
        tokenizer ([`BertTokenizerFast`]): the texts (a fast tokenizer: whole-word masking reads its `word_ids`).
        max_length (`int`, defaults to 40): the text length used when a call does not give one.
    """

    def __init__(self, image_processor=None, tokenizer=None, max_length: int = MAX_TEXT_LENGTH, **kwargs):
        if image_processor is None:
            image_processor = DetrviltViltImageProcessor()
        if tokenizer is None:
            raise ValueError("DetrviltViltProcessor needs a tokenizer (e.g. detrvilt.data.default_vilt_tokenizer())")
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
        self.max_length = max_length
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(self, images=None, text=None, return_tensors: str | None = "pt", do_augment: bool | None = None,
                 generator=None, **text_kwargs) -> BatchFeature:
        r"""Tokenize `text` and preprocess `images` (one image per text).

        Args:
            images: one image or a list (see [`DetrviltViltImageProcessor.preprocess`]).
            text (`str` or `list[str]`): the texts.
            return_tensors (`str`, defaults to `"pt"`).
            do_augment (`bool`, *optional*), generator: passed to the image processor (RandAugment).
            text_kwargs: tokenizer arguments; defaults `padding="max_length"`, `truncation=True`,
                `max_length=self.max_length`.

        Returns:
            [`BatchFeature`] with `input_ids`, `token_type_ids`, `attention_mask` (`torch.LongTensor` of shape
            `(batch_size, text_length)`), `pixel_values` (`(batch_size, 3, H, W)`) and `pixel_mask` (`(batch_size, H,
            W)`).
        """
        if images is None and text is None:
            raise ValueError("give images, text or both")
        data = {}
        if text is not None:
            text_kwargs.setdefault("padding", "max_length")
            text_kwargs.setdefault("truncation", True)
            text_kwargs.setdefault("max_length", self.max_length)
            data.update(self.tokenizer(text, return_tensors=return_tensors, **text_kwargs))
        if images is not None:
            encoding = self.image_processor(images, do_augment=do_augment, generator=generator)
            if text is not None:
                num_texts = 1 if isinstance(text, str) else len(text)
                if num_texts != len(encoding["pixel_values"]):
                    raise ValueError(f"got {num_texts} texts and {len(encoding['pixel_values'])} images; "
                                     "give one image per text")
            data.update(encoding)
        return BatchFeature(data)

    @property
    def model_input_names(self):
        return list(dict.fromkeys(self.tokenizer.model_input_names + self.image_processor.model_input_names))


ViltProcessor = DetrviltViltProcessor
