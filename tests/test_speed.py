"""The speed paths compute what the plain paths compute (CPU): oneDNN inference linears, torch.compile without graph
breaks, bf16 autocast, padding to fixed sizes; and the CUDA-graph helper's argument checks. No timings here."""

import pytest
import torch
import torch._dynamo as dynamo
from conftest import detection_labels, padded_pair, tiny_detr_config
from vilt_testing import randomize_, tiny_vilt_config, vilt_batch

from detrvilt import DetrForObjectDetection, ViltForQuestionAnswering
from detrvilt.fast_inference import CudaGraphInference, choose_bucket, pad_batch, pad_images, pad_text
from detrvilt.modeling.detr import backbone_detr, onednn_detr
from detrvilt.modeling.vilt import modeling_vilt


def tiny_vqa(**overrides) -> ViltForQuestionAnswering:
    return randomize_(ViltForQuestionAnswering(tiny_vilt_config(**overrides))).eval()


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


@pytest.fixture
def onednn_calls(monkeypatch):
    """Count the calls of the oneDNN kernel (so a test knows the fast path ran)."""
    if modeling_vilt._ONEDNN_LINEAR is None or not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    calls = []
    kernel = modeling_vilt._ONEDNN_LINEAR

    def counting(*args):
        calls.append(args[1].shape)
        return kernel(*args)
    monkeypatch.setattr(modeling_vilt, "_ONEDNN_LINEAR", counting)
    return calls


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_pytorch_tanh", "silu"])
def test_onednn_inference_equals_the_plain_path(onednn_calls, monkeypatch, hidden_act):
    model = tiny_vqa(hidden_act=hidden_act)
    inputs = vilt_batch()  # two images of different sizes, texts of different lengths: packing and masks too
    with torch.no_grad():
        fast = model(**inputs)
        assert len(onednn_calls) >= 4 * model.config.num_hidden_layers  # qkv, proj, fc1, fc2 of every block
        monkeypatch.setattr(modeling_vilt, "ONEDNN_CPU_INFERENCE", False)
        calls = len(onednn_calls)
        plain = model(**inputs)
        assert len(onednn_calls) == calls
    torch.testing.assert_close(fast.logits, plain.logits, atol=1e-5, rtol=1e-4)


def test_hooked_or_replaced_linears_are_called_as_modules(onednn_calls):
    model = tiny_vqa()
    seen = []
    model.vilt.encoder.layers[0].mlp.fc1.register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        model(**vilt_batch())
    assert len(seen) == 1  # the hook ran: the layer was called, not bypassed by the oneDNN kernel
    assert (64, 32) not in onednn_calls[:4]  # block 0's fc1 weight (intermediate 64 x hidden 32) went the module way


def test_onednn_path_stays_out_of_training_and_autocast(onednn_calls):
    model = tiny_vqa().train()
    model(**vilt_batch(), labels=torch.rand(2, 5)).loss.backward()  # gradients need the autograd linear
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.eval()(**vilt_batch())
    assert onednn_calls == []


def test_onednn_backbone_convolutions_equal_the_plain_path_forward_and_backward(monkeypatch):
    model = DetrForObjectDetection(tiny_detr_config(freeze_backbone_stem=False)).train()
    backbone = next(m for m in model.modules() if isinstance(m, backbone_detr.DetrConvBackbone))
    convolutions = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(type(m) is backbone_detr.DetrConv2d for m in convolutions)
    pixel_values, pixel_mask = padded_pair()
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(onednn_detr, "ONEDNN_CPU", enabled)
        features = backbone(pixel_values, pixel_mask)[-1][0]
        features.square().mean().backward()
        gradient = backbone.model.conv1.weight.grad.clone()
        backbone.zero_grad(set_to_none=True)
        results.append((features.detach(), gradient))
    (fast, fast_grad), (plain, plain_grad) = results
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast_grad, plain_grad, atol=1e-6, rtol=1e-4)
    assert fast_grad.abs().sum() > 0


@pytest.mark.parametrize("training", [False, True])
def test_vilt_forward_compiles_without_graph_breaks(training):
    model = tiny_vqa().train(training)
    kwargs = dict(vilt_batch(), labels=torch.rand(2, 5)) if training else vilt_batch()
    dynamo.reset()
    explanation = dynamo.explain(model)(**kwargs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_vilt_equals_eager():
    model = tiny_vqa()
    inputs = vilt_batch()
    dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # aot_eager: dynamo + autograd, no codegen
    with torch.no_grad():
        expected = model(**inputs).logits
        actual = compiled(**inputs).logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_detr_inference_forward_compiles_without_graph_breaks():
    model = DetrForObjectDetection(tiny_detr_config()).eval()
    pixel_values, pixel_mask = padded_pair()
    dynamo.reset()
    explanation = dynamo.explain(model)(pixel_values=pixel_values, pixel_mask=pixel_mask)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_bf16_autocast_stays_within_one_percent_of_fp32():
    vilt = tiny_vqa()
    detr = DetrForObjectDetection(tiny_detr_config()).eval()
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        vilt_fp32 = vilt(**vilt_batch()).logits
        detr_fp32 = detr(pixel_values=pixel_values, pixel_mask=pixel_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            vilt_bf16 = vilt(**vilt_batch()).logits
            detr_bf16 = detr(pixel_values=pixel_values, pixel_mask=pixel_mask)
    assert relative_error(vilt_bf16, vilt_fp32) <= 1e-2
    assert relative_error(detr_bf16.logits, detr_fp32.logits) <= 1e-2
    assert relative_error(detr_bf16.pred_boxes, detr_fp32.pred_boxes) <= 1e-2


def test_vilt_gives_the_same_answers_after_padding_to_fixed_sizes():
    model = tiny_vqa()
    inputs = vilt_batch()  # 96 x 128 images, texts of 7 tokens
    padded = {**inputs, **pad_images(inputs["pixel_values"], inputs["pixel_mask"], buckets=[(64, 64), (128, 192)])}
    padded.update(pad_text(inputs["input_ids"], inputs["attention_mask"], length=12))
    padded = pad_batch(padded, 4)
    assert padded["pixel_values"].shape == (4, 3, 128, 192) and padded["input_ids"].shape == (4, 12)
    with torch.no_grad():
        expected = model(**inputs).logits
        actual = model(**padded).logits
    torch.testing.assert_close(actual[:2], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(actual[2:], expected[:1].expand(2, -1), atol=1e-5, rtol=1e-4)


def test_detr_batch_padding_leaves_the_real_images_unchanged():
    model = DetrForObjectDetection(tiny_detr_config()).eval()
    pixel_values, pixel_mask = padded_pair()
    padded = pad_batch({"pixel_values": pixel_values, "pixel_mask": pixel_mask}, 3)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        actual = model(**padded)
    torch.testing.assert_close(actual.logits[:2], expected.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(actual.pred_boxes[:2], expected.pred_boxes, atol=1e-5, rtol=1e-4)


def test_padding_helpers_check_their_arguments():
    assert choose_bucket(100, 90, [(128, 128), (96, 256), (256, 96)]) == (128, 128)
    with pytest.raises(ValueError, match="no bucket"):
        choose_bucket(300, 90, [(128, 128)])
    padded = pad_images(torch.ones(1, 3, 2, 3), buckets=[(4, 4)])
    assert padded["pixel_mask"].tolist() == [[[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]
    assert padded["pixel_values"][0, :, 2:].abs().sum() == 0
    with pytest.raises(ValueError, match="pixel_mask"):
        pad_images(torch.ones(1, 3, 2, 3), torch.ones(1, 3, 2), buckets=[(4, 4)])
    with pytest.raises(ValueError, match="length=4"):
        pad_text(torch.ones(1, 5, dtype=torch.long), length=4)
    with pytest.raises(ValueError, match="first dimension"):
        pad_batch({"a": torch.ones(2, 1), "b": torch.ones(3, 1)}, 4)
    with pytest.raises(ValueError, match="batch_size=1"):
        pad_batch({"a": torch.ones(2, 1)}, 1)


def test_cuda_graph_helper_refuses_cpu_models():
    with pytest.raises(ValueError, match="CUDA device"):
        CudaGraphInference(tiny_vqa())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        CudaGraphInference(lambda x: x)


def onednn_or_skip():
    if onednn_detr._LINEAR is None or not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")


def scaled_conv2d(x, weight, bias, stride, scale=None):
    """The reference: `F.conv2d` with the weight scaled per output channel."""
    weight = weight if scale is None else weight * scale[:, None, None, None]
    return torch.nn.functional.conv2d(x, weight, bias, stride) * 1.0  # not a view: in-place ops follow


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_scale", [False, True])
def test_pointwise_convolution_equals_conv2d_forward_and_backward(stride, with_bias, with_scale):
    onednn_or_skip()
    generator = torch.Generator().manual_seed(stride)
    x = torch.randn(2, 24, 11, 14, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(16, 24, 1, 1, generator=generator)
    bias = torch.randn(16, generator=generator) if with_bias else None
    scale = torch.rand(16, generator=generator) + 0.5 if with_scale else None  # a folded norm's (frozen) scale
    results = []
    for convolution in (onednn_detr.pointwise_convolution, scaled_conv2d):
        leaves = [t.clone().requires_grad_() for t in (x, weight) + ((bias,) if with_bias else ())]
        y = convolution(leaves[0], leaves[1], leaves[2] if with_bias else None, (stride, stride), scale)
        y.add_(1.0).relu_()  # what timm's blocks do to a convolution's output (x += shortcut, ReLU(inplace=True))
        y.square().sum().backward()
        results.append((y.detach(), [leaf.grad for leaf in leaves]))
    (fast, fast_grads), (plain, plain_grads) = results
    assert fast.shape == plain.shape == (2, 16, -(-11 // stride), -(-14 // stride))
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    for fast_grad, plain_grad in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(fast_grad, plain_grad, atol=1e-4, rtol=1e-5)
    assert fast_grads[0].abs().sum() > 0


def test_onednn_linear_equals_f_linear_and_skips_hooked_layers(monkeypatch):
    onednn_or_skip()
    monkeypatch.setattr(onednn_detr, "ONEDNN_MIN_MULTIPLY_ADDS", 0)  # the tiny product takes the oneDNN path
    kernel, calls = onednn_detr._LINEAR, []
    monkeypatch.setattr(onednn_detr, "_LINEAR", lambda *args: calls.append(1) or kernel(*args))
    layer = torch.nn.Linear(12, 7)
    x = torch.randn(3, 5, 12)
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(onednn_detr, "ONEDNN_CPU", enabled)
        leaf = x.clone().requires_grad_()
        y = onednn_detr.linear(leaf, layer)
        y.sin().sum().backward()
        results.append((y.detach(), leaf.grad, layer.weight.grad.clone(), layer.bias.grad.clone()))
        layer.zero_grad(set_to_none=True)
    assert len(calls) == 2  # forward and input gradient, with the switch on only
    for fast, plain in zip(*results, strict=True):
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(onednn_detr, "ONEDNN_CPU", True)
    seen = []
    layer.register_forward_hook(lambda module, args, output: seen.append(output))
    onednn_detr.linear(x, layer)
    assert len(seen) == 1  # a hooked layer is called as a module


@pytest.mark.parametrize("backbone", ["resnet18", "resnet26"])  # basic blocks; bottlenecks with 1x1 convolutions
def test_folded_batch_norms_equal_separate_norms(monkeypatch, backbone):
    torch.manual_seed(0)
    config = tiny_detr_config(backbone=backbone, freeze_backbone_stem=False)
    folded = DetrForObjectDetection(config).train()
    monkeypatch.setattr(backbone_detr, "FOLD_FROZEN_BATCH_NORMS", False)
    separate = DetrForObjectDetection(config).train()
    separate.load_state_dict(folded.state_dict())
    assert list(separate.state_dict()) == list(folded.state_dict())  # folding changes no parameter or buffer name
    norms = [m for m in folded.modules() if isinstance(m, backbone_detr.DetrFrozenBatchNorm2d)]
    assert norms and all(norm.folded for norm in norms)  # every norm of a timm ResNet follows its convolution
    assert not any(m.folded for m in separate.modules() if isinstance(m, backbone_detr.DetrFrozenBatchNorm2d))
    pixel_values, pixel_mask = padded_pair()
    results = []
    for model in (folded, separate):
        torch.manual_seed(0)  # the same dropout masks
        out = model(pixel_values, pixel_mask=pixel_mask)
        (out.logits.square().mean() + out.pred_boxes.mean()).backward()
        conv = model.model.backbone.model.layer2[0].conv1
        results.append((out.logits.detach(), conv.weight.grad.clone()))
    (fast, fast_grad), (plain, plain_grad) = results
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
    # The summation order differs (the scale multiplies the weights, not the outputs): about 2e-6 measured, but a
    # random 26-layer network may flip a ReLU whose input is ~0 (5e-4 seen for one seed). A wrong fold is O(1).
    assert relative_error(fast_grad, plain_grad) < 5e-3
    assert fast_grad.abs().sum() > 0


def test_folded_norms_follow_newly_loaded_weights():
    model = DetrForObjectDetection(tiny_detr_config()).eval()
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        before = model(pixel_values, pixel_mask=pixel_mask).logits
        state = model.state_dict()
        name = "model.backbone.model.layer3.0.bn1.running_var"
        state[name] = state[name] * 4  # a checkpoint with other statistics
        model.load_state_dict(state)
        after = model(pixel_values, pixel_mask=pixel_mask).logits
    assert not torch.allclose(before, after)  # the convolution reads the norm's buffers at every forward


def test_frozen_batch_norms_keep_the_activation_of_timm_norm_act_layers():
    # EfficientNet-style timm backbones apply their activation inside BatchNormAct2d (a BatchNorm2d subclass):
    # freezing must keep it, or the network silently loses every activation.
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    network = timm.create_model("efficientnet_b0", features_only=True, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = network(x)[-1]
        keys = list(network.state_dict())
        backbone_detr.freeze_batch_norms(network)
        actual = network(x)[-1]
    frozen = [m for m in network.modules() if isinstance(m, backbone_detr.DetrFrozenBatchNormAct2d)]
    assert any(isinstance(m.act, torch.nn.SiLU) for m in frozen)
    assert [k for k in network.state_dict()] == [k for k in keys if not k.endswith("num_batches_tracked")]
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet26"])
def test_gradients_keep_the_parameters_strides_for_ddp_buckets(backbone):
    """DDP's gradient buckets take the parameters' strides; a gradient with other strides is copied every step (and
    DDP warns "Grad strides do not match bucket view strides"). The channels-last 1x1 convolutions of the backbone
    computed as matrix products must hand back their weight gradients in the weights' own layout."""
    pytest.importorskip("timm")
    model = DetrForObjectDetection(tiny_detr_config(backbone=backbone, freeze_backbone_stem=False))
    pixel_values, pixel_mask = padded_pair()
    model(pixel_values, pixel_mask=pixel_mask, labels=detection_labels()).loss.backward()
    checked = [(name, p.stride(), p.grad.stride()) for name, p in model.named_parameters() if p.grad is not None]
    assert len(checked) > 100
    assert [c for c in checked if c[1] != c[2]] == []
    assert any(p.dim() == 4 and p.shape[-2:] == (1, 1) and p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters())
