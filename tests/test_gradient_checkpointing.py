"""Gradient checkpointing of DETR's encoder and decoder layers and ViLT's blocks: `gradient_checkpointing_enable()`
gives the plain path's loss and gradients (dropout on, same seed), keeps fewer activations, switches off, is not
saved with the model, and runs inside Trainer."""

import json
import warnings

import pytest
import torch
from conftest import detection_labels, padded_pair, tiny_detr_config
from transformers import TrainingArguments
from vilt_testing import tiny_vilt_config, vilt_batch

import detrvilt.modeling.detr.onednn_detr as onednn_detr
from detrvilt import (
    DetrForObjectDetection,
    DetrForSegmentation,
    DetrImageProcessor,
    DetrSegmentationConfig,
    ViltForPreTraining,
    ViltForQuestionAnswering,
)
from detrvilt.data import DetrDataCollator, make_shapes_dataset, prepare_detection_dataset
from detrvilt.training import DetrTrainer
from detrvilt.training.detr.arguments import DetrTrainingArguments

DROPOUT = dict(dropout=0.2, attention_dropout=0.2, activation_dropout=0.2)
SIZES = ((64, 96), (96, 64))  # padded to 96 x 96: a 3 x 3 feature map
VILT_DROPOUT = dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
# transformers 5.24 renamed the API (activation_checkpointing_*, the old names warn FutureWarning); 5.17 has only
# the gradient_checkpointing_* names. The tests take the current one where it exists.
CURRENT_ARGUMENT = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                    else "gradient_checkpointing")


def enable(model, **checkpoint_kwargs):
    method = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    method(checkpoint_kwargs or None)


def disable(model):
    (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()


def checkpointed_layers(model) -> int:
    return sum(bool(getattr(module, "gradient_checkpointing", False)) for module in model.modules())


def loss_and_gradients(model, inputs, seed=0):
    """The loss of one training forward from `seed`, every parameter's gradient, and the number of elements that the
    checkpointable layers (DETR's encoder and decoder layers, ViLT's blocks) kept for the backward."""
    model.zero_grad(set_to_none=True)
    depth, kept = [0], []
    layers = [module for module in model.modules() if hasattr(module, "gradient_checkpointing")]
    handles = [hook for layer in layers for hook in (
        layer.register_forward_pre_hook(lambda *_: depth.__setitem__(0, depth[0] + 1)),
        layer.register_forward_hook(lambda *_: depth.__setitem__(0, depth[0] - 1)))]

    def pack(tensor):
        if depth[0]:
            kept.append(tensor.numel())
        return tensor

    torch.manual_seed(seed)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = model(**inputs).loss
    finally:
        for handle in handles:
            handle.remove()
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), gradients, sum(kept)


def assert_same_training_step(model, inputs, **checkpoint_kwargs):
    """Plain, then checkpointed: equal losses and gradients, and no activations kept inside the layers."""
    model.train()
    loss, gradients, kept = loss_and_gradients(model, inputs)
    enable(model, **checkpoint_kwargs)
    assert checkpointed_layers(model) > 0
    loss_ckpt, gradients_ckpt, kept_ckpt = loss_and_gradients(model, inputs)
    disable(model)
    assert checkpointed_layers(model) == 0
    # Non-reentrant (the default): the same operations on the same values, bit for bit. Reentrant: the backward
    # accumulates some gradients in another order (differences of a few float32 ulps).
    tolerance = dict(rtol=1e-5, atol=1e-6) if checkpoint_kwargs.get("use_reentrant") else dict(rtol=0, atol=0)
    torch.testing.assert_close(loss_ckpt, loss, **tolerance)
    assert gradients_ckpt.keys() == gradients.keys()
    assert len(gradients) == sum(p.requires_grad for p in model.parameters())  # every trained parameter
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradients_ckpt[name], gradient, **tolerance, msg=name)
    # Checkpointed layers keep nothing for the backward (checkpoint's own hooks take their tensors).
    assert kept > 0 and kept_ckpt == 0, (kept, kept_ckpt)
    # Another seed draws other dropout masks: the equality above is not the equality of two dropout-free passes.
    assert not torch.equal(loss_and_gradients(model, inputs, seed=1)[0], loss)
    return loss


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_detr_gradients_equal_the_plain_path(use_reentrant):
    torch.manual_seed(0)
    model = DetrForObjectDetection(tiny_detr_config(auxiliary_loss=True, **DROPOUT))
    pixel_values, pixel_mask = padded_pair(SIZES)
    inputs = dict(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=detection_labels())
    model.train()
    out = model(**inputs)  # the auxiliary losses of decoder layers 0 and 1 (recomputed ones) are in the loss
    assert len(out.auxiliary_outputs) == 2 and {"loss_ce_0", "loss_giou_1"} <= out.loss_dict.keys()
    assert_same_training_step(model, inputs, use_reentrant=use_reentrant)


def test_detr_gradients_equal_the_plain_path_through_onednn_and_with_attention_maps(monkeypatch):
    """The custom oneDNN linear (an autograd Function) under recomputation, and the explicit attention path whose
    weights come out of the checkpointed layers."""
    monkeypatch.setattr(onednn_detr, "ONEDNN_MIN_MULTIPLY_ADDS", 0)  # the tiny products take the oneDNN path
    calls = []
    kernel = onednn_detr._LINEAR
    if kernel is None:
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setattr(onednn_detr, "_LINEAR", lambda *args: calls.append(1) or kernel(*args))
    torch.manual_seed(0)
    model = DetrForObjectDetection(tiny_detr_config(**DROPOUT))
    pixel_values, pixel_mask = padded_pair(SIZES)
    inputs = dict(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=detection_labels(),
                  output_attentions=True)
    assert_same_training_step(model, inputs)
    assert calls


def test_detr_segmentation_gradients_equal_the_plain_path():
    torch.manual_seed(0)
    config = DetrSegmentationConfig(backbone="resnet18", num_labels=5, d_model=32, encoder_layers=1, decoder_layers=2,
                                    encoder_attention_heads=8, decoder_attention_heads=4, encoder_ffn_dim=64,
                                    decoder_ffn_dim=64, num_queries=6, **DROPOUT)
    model = DetrForSegmentation(config)
    pixel_values, pixel_mask = padded_pair(SIZES)
    generator = torch.Generator().manual_seed(0)
    labels = detection_labels()  # masks at the first image's size, none in the second
    labels[0]["masks"] = (torch.rand(3, 64, 96, generator=generator) > 0.5).float()
    labels[1]["masks"] = torch.zeros(0, 96, 64)
    assert_same_training_step(model, dict(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels))


def test_vilt_pretraining_gradients_equal_the_plain_path():
    torch.manual_seed(0)
    model = ViltForPreTraining(tiny_vilt_config(max_image_length=8, **VILT_DROPOUT))  # patches sampled in training
    inputs = vilt_batch()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[0, 3], labels[1, 2] = 11, 12
    loss = assert_same_training_step(model, dict(inputs, labels=labels, itm_labels=torch.tensor([1, 0])))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_vilt_question_answering_gradients_equal_the_plain_path(use_reentrant):
    """The VQA head reads the pooled [CLS] only: the last block runs on one query token, checkpointed too."""
    torch.manual_seed(0)
    model = ViltForQuestionAnswering(tiny_vilt_config(**VILT_DROPOUT))
    labels = torch.tensor([[0.0, 1.0, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 0.6, 1.0]])
    assert_same_training_step(model, dict(vilt_batch(), labels=labels), use_reentrant=use_reentrant)


def test_checkpointing_is_off_in_evaluation_and_without_gradients():
    torch.manual_seed(0)
    model = DetrForObjectDetection(tiny_detr_config(**DROPOUT))
    enable(model)
    layer = model.model.encoder.layers[0]
    calls = []
    function = layer._gradient_checkpointing_func
    layer._gradient_checkpointing_func = lambda *args, **kwargs: calls.append(1) or function(*args, **kwargs)
    pixel_values, pixel_mask = padded_pair(SIZES)
    with torch.no_grad():
        model.train()(pixel_values, pixel_mask)
        model.eval()(pixel_values, pixel_mask)
    model.eval()(pixel_values, pixel_mask)
    assert calls == []
    model.train()(pixel_values, pixel_mask)
    assert calls == [1]


@pytest.mark.parametrize("model_class, config", [
    (DetrForObjectDetection, tiny_detr_config()),
    (ViltForQuestionAnswering, tiny_vilt_config()),
])
def test_the_flag_is_not_saved_with_the_model(model_class, config, tmp_path):
    """transformers keeps the flag off the config: a saved model loads without checkpointing, and an old config
    that still carries `gradient_checkpointing=True` switches it on once (then drops it)."""
    torch.manual_seed(0)
    model = model_class(config)
    enable(model)
    num_layers = checkpointed_layers(model)
    assert num_layers == (5 if model_class is DetrForObjectDetection else 2)  # 2 + 3 DETR layers, 2 ViLT blocks
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not any("checkpointing" in key for key in saved)
    assert checkpointed_layers(model_class.from_pretrained(tmp_path)) == 0
    saved["gradient_checkpointing"] = True
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = model_class.from_pretrained(tmp_path)
    assert checkpointed_layers(loaded) == num_layers
    assert not hasattr(loaded.config, "gradient_checkpointing")


def test_detr_trains_in_trainer_with_checkpointing(tmp_path):
    processor = DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}, num_labels=3)
    train = prepare_detection_dataset(make_shapes_dataset(4, seed=0, image_size=64, max_objects=3), processor)
    torch.manual_seed(0)
    model = DetrForObjectDetection(tiny_detr_config(num_labels=3, num_queries=6, **DROPOUT))
    layers = [*model.model.encoder.layers, *model.model.decoder.layers]
    calls = []
    for layer in layers:  # a checkpointed layer runs twice per step: in the forward and again in the backward
        layer.register_forward_pre_hook(lambda module, args: calls.append(module))
    args = DetrTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, report_to=[],
                                 use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True,
                                 dataloader_num_workers=0, **{CURRENT_ARGUMENT: True})
    trainer = DetrTrainer(model=model, args=args, train_dataset=train, data_collator=DetrDataCollator())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = trainer.train()
    assert checkpointed_layers(model) == 5
    assert result.training_loss > 0
    assert [calls.count(layer) for layer in layers] == [2] * 5
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any(".encoder.layers.0." in name for name in changed) and any(".decoder.layers.2." in name
                                                                          for name in changed)


def test_deprecated_name_still_works():
    """`gradient_checkpointing_enable()` is the name the issue and older code use (an alias in transformers >= 5.24)."""
    model = ViltForQuestionAnswering(tiny_vilt_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable()
        assert checkpointed_layers(model) == 2
        model.gradient_checkpointing_disable()
    assert checkpointed_layers(model) == 0
