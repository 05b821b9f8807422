"""ViLT GPU checks (marker `gpu`, run with `make test-gpu` on a machine with CUDA)."""

import pytest
import torch
from vilt_testing import TINY, hf_vilt, tiny_vilt_config, vilt_batch

from detrvilt import ViltForPreTraining, ViltForQuestionAnswering
from detrvilt.conversion import convert_transformers_vilt

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(autouse=True)
def _no_tf32():
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def cuda_batch(**kwargs) -> dict:
    return {name: value.cuda() for name, value in vilt_batch(**kwargs).items()}


def test_parity_with_transformers_on_cuda():
    hf_model = hf_vilt("ViltForQuestionAnswering", TINY).cuda()
    ours = convert_transformers_vilt(hf_model)
    assert next(ours.parameters()).is_cuda
    inputs = cuda_batch()
    labels = torch.rand(2, 5, device="cuda")
    with torch.no_grad():
        expected = hf_model(**inputs, labels=labels)
        actual = ours(**inputs, labels=labels)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=0)


def test_eval_forward_makes_no_host_synchronisation():
    model = ViltForQuestionAnswering(tiny_vilt_config()).cuda().eval()
    inputs = cuda_batch()
    with torch.no_grad():
        model(**inputs)  # warm up (lazy initialisations may synchronise once)
        torch.cuda.set_sync_debug_mode("error")
        try:
            model(**inputs)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_bf16_pretraining_step_is_finite_and_the_losses_fp32():
    model = ViltForPreTraining(tiny_vilt_config(max_image_length=6)).cuda().train()
    inputs = cuda_batch()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[0, 2], labels[1, 3] = 7, 8
    generator = torch.Generator(device="cuda").manual_seed(0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(**inputs, labels=labels, itm_labels=torch.tensor([1, 0], device="cuda"), generator=generator)
    assert out.logits.dtype == torch.bfloat16
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in out.loss_dict.values())
    out.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_patch_sampling_is_reproducible_with_cpu_and_cuda_generators():
    model = ViltForQuestionAnswering(tiny_vilt_config(max_image_length=5, hidden_dropout_prob=0.0)).cuda().train()
    inputs = cuda_batch()
    for make in (lambda: torch.Generator().manual_seed(3), lambda: torch.Generator(device="cuda").manual_seed(3)):
        first = model.vilt(**inputs, generator=make())
        second = model.vilt(**inputs, generator=make())
        assert first.patch_index.shape == (2, 5) and torch.equal(first.patch_index, second.patch_index)


def test_cuda_graph_replay_equals_eager_for_new_inputs():
    from detrvilt.fast_inference import CudaGraphInference

    model = ViltForQuestionAnswering(tiny_vilt_config()).cuda().eval()
    runner = CudaGraphInference(model)
    first, second = cuda_batch(seed=0), cuda_batch(seed=1)
    runner(**first)  # captures
    with torch.no_grad():
        expected = model(**second).logits
    actual = runner(**second).logits  # replays on new values of the same shapes
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    assert len(runner.graphs) == 1


def test_cuda_graph_in_bf16_stays_within_one_percent_of_fp32():
    from detrvilt.fast_inference import CudaGraphInference

    model = ViltForQuestionAnswering(tiny_vilt_config()).cuda().eval()
    inputs = cuda_batch()
    with torch.no_grad():
        expected = model(**inputs).logits
    actual = CudaGraphInference(model, autocast_dtype=torch.bfloat16)(**inputs).logits.float()
    assert ((actual - expected).norm() / expected.norm()).item() <= 1e-2


def test_inductor_compiled_forward_equals_eager():
    model = ViltForQuestionAnswering(tiny_vilt_config()).cuda().eval()
    inputs = cuda_batch()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        expected = model(**inputs).logits
        actual = compiled(**inputs).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_vqa_training_step_with_fused_adamw_makes_no_host_synchronisation():
    model = ViltForQuestionAnswering(tiny_vilt_config(max_image_length=5)).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    inputs = cuda_batch()
    labels = torch.rand(2, 5, device="cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**inputs, labels=labels, generator=generator).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step()  # warm up: optimizer state, lazy initialisations
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
