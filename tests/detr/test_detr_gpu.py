"""GPU checks (marker `gpu`, run with `make test-gpu` on a machine with CUDA)."""

import pytest
import torch
from conftest import detection_labels, padded_pair, tiny_detr_config
from test_detr_parity import TINY, assert_same_outputs, hf_detr

from detrvilt import DetrForObjectDetection, DetrLoss
from detrvilt.conversion import convert_transformers_detr

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def to_cuda(labels):
    return [{k: v.cuda() for k, v in target.items()} for target in labels]


@pytest.fixture(autouse=True)
def _no_tf32():
    # TF32 convolutions would make both implementations round differently depending on the algorithm chosen.
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def test_parity_with_transformers_on_cuda():
    hf_model = hf_detr(**TINY).cuda()
    ours = convert_transformers_detr(hf_model)
    assert next(ours.parameters()).is_cuda
    pixel_values, pixel_mask = padded_pair()
    labels = to_cuda(detection_labels())
    with torch.no_grad():
        expected = hf_model(pixel_values=pixel_values.cuda(), pixel_mask=pixel_mask.cuda(), labels=labels)
        actual = ours(pixel_values.cuda(), pixel_mask=pixel_mask.cuda(), labels=labels)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=0)


def test_cpu_parity_helper_still_holds_on_this_machine():
    # The CPU parity check, run where the GPU stack (another transformers version) is installed.
    hf_model = hf_detr(**TINY)
    assert_same_outputs(hf_model, convert_transformers_detr(hf_model), *padded_pair())


def test_bf16_training_step_is_finite_and_the_loss_fp32():
    model = DetrForObjectDetection(tiny_detr_config()).cuda().train()
    pixel_values, pixel_mask = padded_pair()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(pixel_values.cuda(), pixel_mask=pixel_mask.cuda(), labels=to_cuda(detection_labels()))
    assert out.logits.dtype == torch.bfloat16  # the model ran in bf16 ...
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)  # ... the matching and loss in fp32
    out.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_matching_on_cuda_equals_cpu():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 30, 8, generator=generator)
    boxes = torch.rand(3, 4, 30, 4, generator=generator) * 0.5 + 0.2
    labels = [{"class_labels": torch.randint(7, (n,), generator=generator),
               "boxes": torch.rand(n, 4, generator=generator) * 0.3 + 0.2} for n in (4, 0, 9, 2)]
    loss_cpu, dict_cpu = DetrLoss(num_labels=7).compute(logits, boxes, labels)
    loss_gpu, dict_gpu = DetrLoss(num_labels=7).compute(logits.cuda(), boxes.cuda(), to_cuda(labels))
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-5, atol=1e-6)
    for name, value in dict_cpu.items():
        torch.testing.assert_close(dict_gpu[name].cpu(), value, rtol=1e-5, atol=1e-6, msg=name)


def test_cuda_graph_replay_equals_eager():
    from detrvilt.fast_inference import CudaGraphInference

    model = DetrForObjectDetection(tiny_detr_config()).cuda().eval()
    runner = CudaGraphInference(model)
    pixel_values, pixel_mask = padded_pair()
    runner(pixel_values=pixel_values.cuda(), pixel_mask=pixel_mask.cuda())  # captures
    other_values, other_mask = padded_pair(seed=1)
    with torch.no_grad():
        expected = model(pixel_values=other_values.cuda(), pixel_mask=other_mask.cuda())
    actual = runner(pixel_values=other_values.cuda(), pixel_mask=other_mask.cuda())
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, atol=1e-5, rtol=1e-4)


def test_inductor_compiled_inference_equals_eager():
    model = DetrForObjectDetection(tiny_detr_config()).cuda().eval()
    pixel_values, pixel_mask = (t.cuda() for t in padded_pair())
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        actual = compiled(pixel_values=pixel_values, pixel_mask=pixel_mask)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=1e-4)
