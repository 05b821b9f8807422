"""Parity with transformers' ViLT classes on converted random weights (something we did not write).

Every class, a tiny config and the full ViLT-B/32 config, eval mode with `max_image_length=-1`, on a batch of two
different-size images padded together and two texts of different lengths: outputs within 1e-4, losses equal.
"""

import pytest
import torch
from vilt_testing import FULL, TINY, assert_same_sequence, hf_vilt, unshuffled_transformers_patches, vilt_batch

from detrvilt import (
    ViltForImageAndTextRetrieval,
    ViltForImagesAndTextClassification,
    ViltForPreTraining,
    ViltForQuestionAnswering,
    ViltModel,
)
from detrvilt.conversion import convert_transformers_vilt, convert_transformers_vilt_state_dict

CONFIGS = {"tiny": TINY, "full": FULL}


def batch_for(config: dict, **kwargs) -> dict:
    return vilt_batch(vocab_size=config.get("vocab_size", 30522), **kwargs)


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_vilt_model(size):
    hf_model = hf_vilt("ViltModel", CONFIGS[size])
    ours = convert_transformers_vilt(hf_model)
    assert type(ours) is ViltModel and not ours.training
    inputs = batch_for(CONFIGS[size])
    with torch.no_grad(), unshuffled_transformers_patches():
        expected = hf_model(**inputs)
    with torch.no_grad():
        actual = ours(**inputs)
    text_length = inputs["input_ids"].shape[1]
    assert actual.last_hidden_state.shape[1] == text_length + 1 + 12  # every patch of the padded 3 x 4 grid
    assert expected.last_hidden_state.shape[1] == text_length + 1 + 8  # transformers: the largest image's 8
    assert_same_sequence(actual.last_hidden_state, expected.last_hidden_state, inputs["attention_mask"],
                         inputs["pixel_mask"])
    padding = ~torch.cat([inputs["attention_mask"].bool(), actual.image_token_mask], 1)
    assert actual.last_hidden_state[padding].abs().max() == 0
    torch.testing.assert_close(actual.pooler_output, expected.pooler_output, atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_masked_lm_to_pretraining(size):
    hf_model = hf_vilt("ViltForMaskedLM", CONFIGS[size])
    ours = convert_transformers_vilt(hf_model)
    assert type(ours) is ViltForPreTraining
    # Untied, as in the official code, but starting from transformers' (tied) values.
    decoder, words = ours.mlm_score.decoder.weight, ours.vilt.embeddings.text_embeddings.word_embeddings.weight
    assert decoder is not words and torch.equal(decoder, words)
    inputs = batch_for(CONFIGS[size])
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[0, 2], labels[0, 4], labels[1, 1] = 5, 17, 42
    with torch.no_grad():
        expected = hf_model(**inputs, labels=labels)
        actual = ours(**inputs, labels=labels)
    text = inputs["attention_mask"].bool()  # MLM scores at padding positions have no meaning
    torch.testing.assert_close(actual.logits[text], expected.logits[text], atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.loss_dict["mlm_loss"], expected.loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=0)


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_question_answering(size):
    hf_model = hf_vilt("ViltForQuestionAnswering", CONFIGS[size])
    ours = convert_transformers_vilt(hf_model)
    assert type(ours) is ViltForQuestionAnswering
    inputs = batch_for(CONFIGS[size])
    labels = torch.tensor([[0.0, 0.3, 1.0, 0.0, 0.6], [1.0, 0.0, 0.0, 0.0, 0.0]])
    with torch.no_grad():
        expected = hf_model(**inputs, labels=labels)
        actual = ours(**inputs, labels=labels)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=0)
    assert actual.loss_dict == {"vqa_loss": actual.loss}


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_images_and_text_classification(size):
    hf_model = hf_vilt("ViltForImagesAndTextClassification", CONFIGS[size])
    ours = convert_transformers_vilt(hf_model)
    assert type(ours) is ViltForImagesAndTextClassification
    assert ours.config.num_images == 2 and ours.config.modality_type_vocab_size == 3
    first = batch_for(CONFIGS[size], seed=0)
    second = batch_for(CONFIGS[size], sizes=((96, 128), (40, 100)), seed=1)  # another padding pattern
    inputs = dict(
        input_ids=first["input_ids"], attention_mask=first["attention_mask"],
        pixel_values=torch.stack([first["pixel_values"], second["pixel_values"]], dim=1),  # (B, 2, C, H, W)
        pixel_mask=torch.stack([first["pixel_mask"], second["pixel_mask"]], dim=1),
    )
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        expected = hf_model(**inputs, labels=labels, output_hidden_states=True)
        actual = ours(**inputs, labels=labels, output_hidden_states=True)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=0)
    assert len(actual.hidden_states) == 2 and len(actual.hidden_states[0]) == len(expected.hidden_states[0])
    text = inputs["attention_mask"].bool()
    for i in range(2):  # each image's pass: the valid text tokens of every block's input
        for ours_state, hf_state in zip(actual.hidden_states[i], expected.hidden_states[i], strict=True):
            torch.testing.assert_close(ours_state[:, :text.shape[1]][text], hf_state[:, :text.shape[1]][text],
                                       atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_image_and_text_retrieval(size):
    hf_model = hf_vilt("ViltForImageAndTextRetrieval", CONFIGS[size])
    ours = convert_transformers_vilt(hf_model)
    assert type(ours) is ViltForImageAndTextRetrieval
    inputs = batch_for(CONFIGS[size])
    with torch.no_grad():
        expected = hf_model(**inputs)
        actual = ours(**inputs)
    assert actual.logits.shape == expected.logits.shape == (2, 1)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)


def test_transformers_4x_key_names_convert_too():
    """transformers 4.x stored the MLM decoder bias as `mlm_score.bias` and saved the text position buffer."""
    hf_model = hf_vilt("ViltForMaskedLM", TINY)
    state_dict = dict(hf_model.state_dict())
    state_dict["mlm_score.bias"] = state_dict.pop("mlm_score.decoder.bias")
    state_dict["vilt.embeddings.text_embeddings.position_ids"] = torch.arange(16)[None]
    old = convert_transformers_vilt_state_dict(state_dict)
    new = convert_transformers_vilt_state_dict(hf_model.state_dict())
    assert old.keys() == new.keys()
    assert all(torch.equal(old[key], new[key]) for key in new)
    qkv = new["vilt.encoder.layers.0.attn.qkv.weight"]
    layer = hf_model.vilt.encoder.layer[0].attention.attention
    assert torch.equal(qkv, torch.cat([layer.query.weight, layer.key.weight, layer.value.weight]))


def test_conversion_keeps_transformers_settings_that_differ_from_the_official():
    hf_model = hf_vilt("ViltForQuestionAnswering", dict(TINY, max_image_length=7))
    ours = convert_transformers_vilt(hf_model)
    assert ours.config.layer_norm_eps == ours.config.text_layer_norm_eps == hf_model.config.layer_norm_eps
    assert ours.config.hidden_dropout_prob == hf_model.config.hidden_dropout_prob == 0.0
    assert ours.config.max_image_length == 7 and ours.config.num_labels == 5


def test_conversion_rejects_other_models():
    with pytest.raises(TypeError, match="hf_model"):
        convert_transformers_vilt(torch.nn.Linear(2, 2))
