"""ViLT model properties: attention paths, save/load, batch independence, patch sampling, heads, input checks."""

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
)
from vilt_testing import SIZES, tiny_vilt_config, valid_patch_rows, vilt_batch

from detrvilt import (
    ViltConfig,
    ViltForImageAndTextRetrieval,
    ViltForImagesAndTextClassification,
    ViltForPreTraining,
    ViltForQuestionAnswering,
    ViltModel,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ViltModel(tiny_vilt_config()).eval()


@pytest.fixture(scope="module")
def vqa():
    torch.manual_seed(0)
    return ViltForQuestionAnswering(tiny_vilt_config()).eval()


def test_output_shapes_and_image_token_mask(model):
    inputs = vilt_batch()
    with torch.no_grad():
        out = model(**inputs)
    assert out.last_hidden_state.shape == (2, 7 + 1 + 12, 32) and out.pooler_output.shape == (2, 32)
    assert torch.equal(out.patch_index, torch.arange(12).expand(2, -1))
    expected = torch.zeros(2, 3, 4, dtype=torch.bool)
    expected[0, :2, :] = True  # 64 x 128 pixels: 2 x 4 patches
    expected[1, :, :2] = True  # 96 x 50: 3 x 2 patches (the second column's top-left pixel, x = 32, is real)
    assert torch.equal(out.image_token_mask, torch.cat([torch.ones(2, 1, dtype=torch.bool), expected.flatten(1)], 1))


def test_sdpa_equals_explicit_attention(model, vqa):
    inputs = vilt_batch()
    with torch.no_grad():
        fast = model(**inputs)
        explicit = model(**inputs, output_attentions=True)
        vqa_fast = vqa(**inputs).logits
        vqa_explicit = vqa(**inputs, output_attentions=True).logits
    torch.testing.assert_close(fast.last_hidden_state, explicit.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.pooler_output, explicit.pooler_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(vqa_fast, vqa_explicit, atol=1e-5, rtol=0)
    assert fast.attentions is None and len(explicit.attentions) == 2
    weights = explicit.attentions[-1]
    assert weights.shape == (2, 4, 20, 20)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 20))
    keys = torch.cat([inputs["attention_mask"].bool(), explicit.image_token_mask], 1)  # (B, S)
    assert weights.permute(0, 2, 1, 3)[~keys[:, None, None, :].expand(-1, 20, 4, -1)].abs().max() == 0


def test_pooled_output_only_gives_the_same_pooled_output(model):
    inputs = vilt_batch()
    with torch.no_grad():
        full = model(**inputs)
        short = model(**inputs, pooled_output_only=True)
    assert short.last_hidden_state.shape == (2, 1, 32)
    torch.testing.assert_close(short.last_hidden_state[:, 0], full.last_hidden_state[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(short.pooler_output, full.pooler_output, atol=1e-6, rtol=0)


def test_packed_valid_tokens_equal_the_dense_padded_computation(model):
    """On the CPU the blocks skip padding tokens (packing); the dense path (used on GPUs) computes them too. Both
    give the same valid tokens, forward and backward."""
    inputs = vilt_batch()
    text = model.embeddings.add_modality_type(model.embeddings.text_embeddings(inputs["input_ids"]), 0)
    image, image_mask, _ = model.embeddings.image_embeddings(inputs["pixel_values"], inputs["pixel_mask"])
    x = torch.cat([text, model.embeddings.add_modality_type(image, 1)], 1).detach()  # (B, S, D)
    mask = torch.cat([inputs["attention_mask"].bool(), image_mask], 1)
    bias = (~mask)[:, None, None, :].float() * torch.finfo(torch.float32).min
    dense_input, packed_input = x.clone().requires_grad_(), x.clone().requires_grad_()
    dense = dense_input
    for layer in model.encoder.layers:
        dense = layer(dense, bias)[0]
    packed = model.encoder(packed_input, mask, bias)[0]
    torch.testing.assert_close(packed[mask], dense[mask], atol=1e-5, rtol=0)
    assert packed[~mask].abs().max() == 0 and dense[~mask].abs().min() > 0
    dense[mask].square().sum().backward()
    packed[mask].square().sum().backward()
    torch.testing.assert_close(packed_input.grad[mask], dense_input.grad[mask], atol=1e-4, rtol=1e-5)


def test_an_image_does_not_depend_on_its_batch(model, vqa):
    """Each image alone (a batch of one, padded only to its own multiple of 32) against the padded batch of two:
    positions are interpolated to each image's own patch grid and padding is masked."""
    inputs = vilt_batch()
    with torch.no_grad():
        batch = model(**inputs)
        batch_logits = vqa(**inputs).logits
    for i, ((height, width), length) in enumerate(zip(SIZES, (7, 5), strict=True)):
        padded_height, padded_width = -(-height // 32) * 32, -(-width // 32) * 32
        alone = dict(
            input_ids=inputs["input_ids"][i:i + 1, :length],
            pixel_values=inputs["pixel_values"][i:i + 1, :, :padded_height, :padded_width],
            pixel_mask=inputs["pixel_mask"][i:i + 1, :padded_height, :padded_width],
        )
        assert alone["pixel_values"].shape[-2:] != inputs["pixel_values"].shape[-2:] or i == 0
        with torch.no_grad():
            single = model(**alone)
            single_logits = vqa(**alone).logits
        torch.testing.assert_close(single.pooler_output[0], batch.pooler_output[i], atol=1e-4, rtol=0)
        torch.testing.assert_close(single_logits[0], batch_logits[i], atol=1e-4, rtol=0)
        torch.testing.assert_close(single.last_hidden_state[0, :length], batch.last_hidden_state[i, :length],
                                   atol=1e-4, rtol=0)  # the text
        torch.testing.assert_close(single.last_hidden_state[0, length], batch.last_hidden_state[i, 7],
                                   atol=1e-4, rtol=0)  # the image [CLS], after the batch's longest text
        # The valid patches, located in each grid (the lone image's grid is narrower).
        single_patches = valid_patch_rows(alone["pixel_mask"])[0]
        batch_patches = valid_patch_rows(inputs["pixel_mask"][i:i + 1])[0]
        assert len(single_patches) == len(batch_patches) == (8, 6)[i]
        torch.testing.assert_close(single.last_hidden_state[0, length + 1 + single_patches],
                                   batch.last_hidden_state[i, 7 + 1 + batch_patches], atol=1e-4, rtol=0)


# --- patch sampling -----------------------------------------------------------------------------------------


def sampling_model(max_image_length: int) -> ViltModel:
    torch.manual_seed(0)
    return ViltModel(tiny_vilt_config(max_image_length=max_image_length, hidden_dropout_prob=0.0)).train()


def test_training_keeps_exactly_max_image_length_valid_patches():
    model = sampling_model(5)  # image 0 has 8 valid patches, image 1 has 6, of a 12-patch grid
    inputs = vilt_batch()
    out = model(**inputs, generator=torch.Generator().manual_seed(3))
    assert out.patch_index.shape == (2, 5) and out.last_hidden_state.shape == (2, 7 + 1 + 5, 32)
    assert out.image_token_mask.all()  # only valid patches when an image has enough
    valid = inputs["pixel_mask"][:, ::32, ::32].flatten(1).bool()
    assert valid.gather(1, out.patch_index).all()
    assert (out.patch_index.diff(dim=1) > 0).all()  # distinct, in grid order


def test_small_images_are_filled_up_with_padding_patches():
    model = sampling_model(10)
    out = model(**vilt_batch(), generator=torch.Generator().manual_seed(0))
    assert out.patch_index.shape == (2, 10)
    assert out.image_token_mask[:, 1:].sum(1).tolist() == [8, 6]  # every valid patch kept, padding fills up
    model = sampling_model(200)  # more than the grid holds: the whole grid
    out = model(**vilt_batch(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.patch_index, torch.arange(12).expand(2, -1))


def test_sampling_is_deterministic_for_a_generator_and_varies_with_its_seed():
    model = sampling_model(4)
    inputs = vilt_batch()
    first = model(**inputs, generator=torch.Generator().manual_seed(7))
    second = model(**inputs, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first.patch_index, second.patch_index)
    assert torch.equal(first.last_hidden_state, second.last_hidden_state)
    others = [model(**inputs, generator=torch.Generator().manual_seed(s)).patch_index for s in range(8)]
    assert any(not torch.equal(index, first.patch_index) for index in others)
    torch.manual_seed(11)  # without a generator: the global RNG
    third = model(**inputs).patch_index
    torch.manual_seed(11)
    assert torch.equal(model(**inputs).patch_index, third)


def test_sampled_tokens_are_the_full_grid_tokens_they_index():
    model = sampling_model(5)
    inputs = vilt_batch()
    embeddings = model.embeddings
    full, _, _ = embeddings.image_embeddings(inputs["pixel_values"], inputs["pixel_mask"])
    sampled, _, index = embeddings.image_embeddings(inputs["pixel_values"], inputs["pixel_mask"], 5,
                                                    torch.Generator().manual_seed(1))
    torch.testing.assert_close(sampled[:, 1:], full[:, 1:].gather(1, index[..., None].expand(-1, -1, 32)))
    torch.testing.assert_close(sampled[:, 0], full[:, 0])


def test_no_sampling_in_eval():
    model = sampling_model(5).eval()
    with torch.no_grad():
        out = model(**vilt_batch(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.patch_index, torch.arange(12).expand(2, -1))


# --- save / load, Auto classes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_class, auto_classes",
    [
        (ViltModel, [AutoModel]),
        (ViltForQuestionAnswering, [AutoModelForVisualQuestionAnswering]),
        (ViltForPreTraining, [AutoModelForPreTraining, AutoModelForMaskedLM]),
        (ViltForImageAndTextRetrieval, []),
    ],
)
def test_save_and_load_through_our_class_and_auto(model_class, auto_classes, tmp_path):
    torch.manual_seed(0)
    model = model_class(tiny_vilt_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "detrvilt_vilt"
    inputs = vilt_batch()
    with torch.no_grad():
        expected = model(**inputs).to_tuple()
        for loader in [model_class] + auto_classes:
            loaded = loader.from_pretrained(tmp_path).eval()
            assert type(loaded) is model_class
            actual = loaded(**inputs).to_tuple()
            assert len(actual) == len(expected)
            for a, b in zip(actual, expected, strict=True):
                # Not always bit-equal: loaded tensors can sit at unaligned addresses, which changes the BLAS
                # kernel's summation order (differences ~1e-9).
                torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    if model_class is ViltForPreTraining:  # the MLM decoder stays untied after loading
        assert loaded.mlm_score.decoder.weight is not loaded.vilt.embeddings.text_embeddings.word_embeddings.weight


def test_nlvr2_model_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = ViltForImagesAndTextClassification(tiny_vilt_config(num_images=2, modality_type_vocab_size=3)).eval()
    model.save_pretrained(tmp_path)
    inputs = nlvr2_inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
        actual = ViltForImagesAndTextClassification.from_pretrained(tmp_path).eval()(**inputs).logits
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)


def test_auto_classes_are_registered():
    config = tiny_vilt_config()
    assert isinstance(AutoModel.from_config(config), ViltModel)
    assert isinstance(AutoModelForVisualQuestionAnswering.from_config(config), ViltForQuestionAnswering)
    assert isinstance(AutoModelForPreTraining.from_config(config), ViltForPreTraining)
    assert isinstance(AutoModelForMaskedLM.from_config(config), ViltForPreTraining)


# --- heads ----------------------------------------------------------------------------------------------------


def nlvr2_inputs():
    first = vilt_batch(seed=0)
    second = vilt_batch(sizes=((96, 128), (40, 100)), seed=1)
    return dict(input_ids=first["input_ids"], attention_mask=first["attention_mask"],
                pixel_values=torch.stack([first["pixel_values"], second["pixel_values"]], 1),
                pixel_mask=torch.stack([first["pixel_mask"], second["pixel_mask"]], 1))


def test_nlvr2_pairs_run_as_one_batch_with_modality_types_one_and_two():
    torch.manual_seed(0)
    model = ViltForImagesAndTextClassification(tiny_vilt_config(num_images=2, modality_type_vocab_size=3)).eval()
    inputs = nlvr2_inputs()
    with torch.no_grad():
        out = model(**inputs, labels=torch.tensor([0, 4]))
        pooled = [
            model.vilt(inputs["input_ids"], inputs["attention_mask"], pixel_values=inputs["pixel_values"][:, i],
                       pixel_mask=inputs["pixel_mask"][:, i], image_token_type_idx=i + 1).pooler_output
            for i in range(2)
        ]
        expected = model.classifier(torch.cat(pooled, dim=-1))
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(expected, torch.tensor([0, 4])))
    assert set(out.loss_dict) == {"nlvr2_loss"}


def test_nlvr2_second_image_modality_starts_as_the_first():
    model = ViltForImagesAndTextClassification(tiny_vilt_config(num_images=2, modality_type_vocab_size=3))
    model.init_second_image_modality()
    table = model.vilt.embeddings.modality_type_embeddings.weight
    assert torch.equal(table[2], table[1]) and not torch.equal(table[0], table[1])


def test_retrieval_scores_candidate_texts_and_trains_with_cross_entropy():
    torch.manual_seed(0)
    model = ViltForImageAndTextRetrieval(tiny_vilt_config()).eval()
    inputs = vilt_batch()
    candidates = torch.stack([inputs["input_ids"], inputs["input_ids"].flip(0), inputs["input_ids"].roll(1, 1)], 1)
    masks = torch.stack([inputs["attention_mask"], inputs["attention_mask"].flip(0), inputs["attention_mask"]], 1)
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        out = model(input_ids=candidates, attention_mask=masks, pixel_values=inputs["pixel_values"],
                    pixel_mask=inputs["pixel_mask"], labels=labels)
        assert out.logits.shape == (2, 3)
        for k in range(3):  # each candidate alone, one text per image
            alone = model(input_ids=candidates[:, k], attention_mask=masks[:, k], pixel_values=inputs["pixel_values"],
                          pixel_mask=inputs["pixel_mask"]).logits
            torch.testing.assert_close(out.logits[:, k:k + 1], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert out.loss_dict == {"irtr_loss": out.loss}
    model.train()
    model(input_ids=candidates, attention_mask=masks, pixel_values=inputs["pixel_values"],
          pixel_mask=inputs["pixel_mask"], labels=labels).loss.backward()
    assert model.rank_output.weight.grad.abs().sum() > 0


def test_retrieval_rank_head_starts_from_the_itm_match_row():
    torch.manual_seed(0)
    pretraining = ViltForPreTraining(tiny_vilt_config()).eval()
    retrieval = ViltForImageAndTextRetrieval.from_pretraining_model(pretraining)
    assert torch.equal(retrieval.rank_output.weight, pretraining.itm_score.weight[1:])
    assert torch.equal(retrieval.rank_output.bias, pretraining.itm_score.bias[1:])
    inputs = vilt_batch()
    with torch.no_grad():
        torch.testing.assert_close(retrieval(**inputs).logits[:, 0], pretraining(**inputs).itm_logits[:, 1],
                                   atol=1e-5, rtol=0)


def test_pretraining_losses_and_objectives():
    torch.manual_seed(0)
    model = ViltForPreTraining(tiny_vilt_config()).train()
    inputs = vilt_batch()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[0, 3], labels[1, 2] = 11, 12
    itm_labels = torch.tensor([1, 0])
    out = model(**inputs, labels=labels, itm_labels=itm_labels)
    assert set(out.loss_dict) == {"mlm_loss", "itm_loss", "wpa_loss"}
    d = out.loss_dict
    torch.testing.assert_close(out.loss, d["mlm_loss"] + d["itm_loss"] + 0.1 * d["wpa_loss"])
    assert out.logits.shape == (2, 7, 99) and out.itm_logits.shape == (2, 2) and out.wpa_distance.shape == (2,)
    out.loss.backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert no_grad == []
    # Only the MLM objective: no ITM head output, ITM labels refused.
    mlm_only = ViltForPreTraining(tiny_vilt_config(pretraining_objectives=["mlm"]))
    out = mlm_only(**inputs, labels=labels)
    assert out.itm_logits is None and set(out.loss_dict) == {"mlm_loss"}
    with pytest.raises(ValueError, match="itm_labels were given"):
        mlm_only(**inputs, itm_labels=itm_labels)


def test_vqa_loss_is_bce_times_the_number_of_answers(vqa):
    inputs = vilt_batch()
    labels = torch.tensor([[0.0, 1.0, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 0.6, 1.0]])
    out = vqa(**inputs, labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels, reduction="sum") / 2
    torch.testing.assert_close(out.loss, expected)


# --- input and config checks ------------------------------------------------------------------------------------


def _inputs(**changes):
    inputs = vilt_batch()
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(input_ids=torch.ones(2, 17, dtype=torch.long), attention_mask=None),
         r"input_ids has 17 tokens, more than .*max_position_embeddings=16"),
        (dict(pixel_values=torch.zeros(2, 3, 96, 100), pixel_mask=None),
         r"pixel_values height and width must be positive multiples of patch_size=32.*\(2, 3, 96, 100\)"),
        (dict(pixel_values=torch.zeros(3, 3, 96, 128), pixel_mask=None),
         "input_ids has batch size 2 but pixel_values has batch size 3"),
        (dict(pixel_mask=torch.ones(2, 96, 96)), r"pixel_mask must be .*\(2, 96, 128\).*got shape \(2, 96, 96\)"),
        (dict(attention_mask=torch.ones(2, 6)), r"attention_mask must be .*\(2, 7\).*got shape \(2, 6\)"),
        (dict(pixel_values=torch.zeros(2, 1, 96, 128), pixel_mask=None), "num_channels=3"),
        (dict(image_token_type_idx=2), r"image_token_type_idx must be in \[1, modality_type_vocab_size=2\)"),
    ],
)
def test_bad_input_raises_value_error(model, changes, message):
    with pytest.raises(ValueError, match=message):
        model(**_inputs(**changes))


def test_more_images_than_the_model_takes_raises():
    model = ViltForImagesAndTextClassification(tiny_vilt_config(num_images=2, modality_type_vocab_size=3))
    inputs = nlvr2_inputs()
    inputs["pixel_values"] = torch.cat([inputs["pixel_values"], inputs["pixel_values"][:, :1]], 1)
    inputs["pixel_mask"] = torch.cat([inputs["pixel_mask"], inputs["pixel_mask"][:, :1]], 1)
    with pytest.raises(ValueError, match=r"pixel_values holds 3 images per example but the model takes num_images=2"):
        model(**inputs)
    with pytest.raises(ValueError, match=r"num_images=3 needs one modality type per image.*at least 4, got 3"):
        ViltConfig(num_images=3, modality_type_vocab_size=3)


@pytest.mark.parametrize(
    "head, labels, message",
    [
        (ViltForQuestionAnswering, torch.ones(2, 4), r"labels must have shape \(2, 5\)"),
        (ViltForQuestionAnswering, torch.ones(2, 5, dtype=torch.long), "labels must be a float tensor"),
        (ViltForPreTraining, torch.ones(2, 6, dtype=torch.long), r"labels must have shape \(2, 7\)"),
        (ViltForImageAndTextRetrieval, torch.zeros(2, dtype=torch.long), "labels need the candidate texts"),
    ],
)
def test_bad_labels_raise_value_error(head, labels, message):
    model = head(tiny_vilt_config())
    with pytest.raises((ValueError, TypeError), match=message):
        model(**vilt_batch(), labels=labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=30), "divisible"),
        (dict(max_image_length=0), "max_image_length"),
        (dict(modality_type_vocab_size=1), "modality_type_vocab_size"),
        (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
        (dict(hidden_act="tanh"), "hidden_act"),
        (dict(pretraining_objectives=["mlm", "mpp"]), "pretraining_objectives"),
        (dict(image_size=16), "image_size=16 must be at least patch_size=32"),
        (dict(num_images=0), "num_images"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_vilt_config(**kwargs)


def test_config_defaults_are_vilt_b32_and_the_papers():
    config = ViltConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.intermediate_size, config.patch_size, config.image_size) == (3072, 32, 384)
    assert (config.vocab_size, config.max_position_embeddings, config.hidden_dropout_prob) == (30522, 40, 0.1)
    assert config.max_image_length == config.max_image_len == -1
    assert ViltConfig(max_image_len=200).max_image_length == 200  # the official name works too
    assert config.pretraining_objectives == ["mlm", "itm", "wpa"] and config.wpa_loss_weight == 0.1
    assert (config.ipot_beta, config.ipot_iterations, config.ipot_inner_iterations) == (0.5, 50, 1)
    assert config.modality_type_vocab_size == 2 and config.model_type == "detrvilt_vilt"
