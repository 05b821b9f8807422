"""Word-patch alignment: IPOT plans on hand-checkable costs, the exact optimal transport, aligned vs shuffled
pairs, detached plans, and the whole pretraining loss under bf16 autocast."""

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from vilt_testing import tiny_vilt_config, vilt_batch

from detrvilt import ViltForPreTraining
from detrvilt.modeling.vilt.wpa_vilt import cosine_cost, ipot_plan, wpa_distance, wpa_loss, wpa_masks


def exact_ot(cost: np.ndarray) -> float:
    """The exact transport cost between uniform marginals, by linear programming."""
    m, n = cost.shape
    rows = np.kron(np.eye(m), np.ones((1, n)))  # sum_j P_ij = 1/m
    columns = np.kron(np.ones((1, m)), np.eye(n))  # sum_i P_ij = 1/n
    result = linprog(cost.ravel(), A_eq=np.vstack([rows, columns]),
                     b_eq=np.concatenate([np.full(m, 1 / m), np.full(n, 1 / n)]), bounds=(0, None))
    return result.fun


def test_plan_of_a_two_by_two_cost_is_the_diagonal():
    cost = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    plan = ipot_plan(cost, torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
    torch.testing.assert_close(plan, torch.tensor([[[0.5, 0.0], [0.0, 0.5]]]), atol=1e-3, rtol=0)


def test_hand_checkable_plan_with_padding_has_the_right_marginals():
    """Two words, four patches: word 0 lies on patches 0 and 1, word 1 on patches 2 and 3 (cost 0), all else cost 2.
    The optimal plan moves 1/4 along each zero-cost pair. A padded word and a padded patch must stay empty."""
    cost = torch.full((1, 3, 5), 2.0)
    cost[0, 0, :2] = cost[0, 1, 2:4] = 0.0
    cost[0, 2, :] = cost[0, :, 4] = 0.0  # padding: cheap, so that only the masks keep it out
    text_valid = torch.tensor([[True, True, False]])
    image_valid = torch.tensor([[True, True, True, True, False]])
    plan = ipot_plan(cost, text_valid, image_valid)
    expected = torch.zeros(1, 3, 5)
    expected[0, 0, :2] = expected[0, 1, 2:4] = 0.25
    torch.testing.assert_close(plan, expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(plan.sum(2), torch.tensor([[0.5, 0.5, 0.0]]), atol=1e-3, rtol=0)
    torch.testing.assert_close(plan.sum(1), torch.tensor([[0.25, 0.25, 0.25, 0.25, 0.0]]), atol=1e-3, rtol=0)


def test_plan_marginals_on_random_costs_with_padding():
    generator = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 5, 6, generator=generator) * 2  # cosine costs lie in [0, 2]
    text_valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    image_valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 1]], dtype=torch.bool)
    expected_rows = text_valid / text_valid.sum(1, keepdim=True)
    expected_columns = image_valid / image_valid.sum(1, keepdim=True)
    plan = ipot_plan(cost, text_valid, image_valid)  # the official 50 iterations
    torch.testing.assert_close(plan.sum(2), expected_rows, atol=1e-5, rtol=0)  # exact after the last update
    torch.testing.assert_close(plan.sum(1), expected_columns, atol=2e-3, rtol=0)  # converging ...
    plan = ipot_plan(cost, text_valid, image_valid, iterations=200)
    torch.testing.assert_close(plan.sum(1), expected_columns, atol=1e-5, rtol=0)  # ... to the exact marginal
    assert plan.masked_select(~(text_valid[:, :, None] & image_valid[:, None, :])).abs().max() == 0
    assert (plan >= 0).all()


@pytest.mark.parametrize("shape", [(3, 3), (4, 6), (7, 5)])
def test_ipot_reaches_the_exact_transport_cost(shape):
    cost = torch.rand(1, *shape, generator=torch.Generator().manual_seed(sum(shape))) * 2
    valid = (torch.ones(1, shape[0], dtype=torch.bool), torch.ones(1, shape[1], dtype=torch.bool))
    plan = ipot_plan(cost, *valid)
    assert abs((cost * plan).sum().item() - exact_ot(cost[0].numpy())) < 1e-3


def test_aligned_pairs_are_closer_than_shuffled_pairs():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(4, 6, 16, generator=generator)
    aligned_text = image[:, torch.tensor([3, 0, 5, 1, 2, 4])] + 0.01 * torch.randn(4, 6, 16, generator=generator)
    shuffled_text = aligned_text.roll(1, dims=0)  # each text with another example's image
    valid = (torch.ones(4, 6, dtype=torch.bool), torch.ones(4, 6, dtype=torch.bool))
    aligned = wpa_distance(aligned_text, image, *valid)
    shuffled = wpa_distance(shuffled_text, image, *valid)
    assert (aligned < 1e-2).all() and (shuffled > 0.5).all()
    matched = torch.ones(4, dtype=torch.long)
    assert wpa_loss(aligned, matched) < wpa_loss(shuffled, matched)
    # Unmatched pairs count negatively: pushing them apart lowers the loss.
    assert wpa_loss(shuffled, torch.zeros(4, dtype=torch.long)) == -shuffled.mean()


def test_gradient_flows_through_the_cost_only():
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(2, 4, 8, generator=generator, requires_grad=True)
    image = torch.randn(2, 5, 8, generator=generator, requires_grad=True)
    valid = (torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool))
    wpa_distance(text, image, *valid).sum().backward()
    with torch.no_grad():
        plan = ipot_plan(cosine_cost(text, image), *valid)
    text_ref, image_ref = text.detach().clone().requires_grad_(), image.detach().clone().requires_grad_()
    (cosine_cost(text_ref, image_ref) * plan).sum().backward()  # the plan as a constant
    torch.testing.assert_close(text.grad, text_ref.grad)
    torch.testing.assert_close(image.grad, image_ref.grad)


def test_wpa_leaves_out_cls_sep_and_the_image_cls():
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    image_token_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    text_valid, image_valid = wpa_masks(attention_mask, image_token_mask)
    assert text_valid.tolist() == [[False, True, True, True, False], [False, True, False, False, False]]
    assert image_valid.tolist() == [[False, True, True, False], [False, True, True, True]]


def test_pretraining_loss_backpropagates_in_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    model = ViltForPreTraining(tiny_vilt_config(max_image_length=6)).train()
    inputs = vilt_batch()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[0, 2], labels[1, 3] = 7, 8
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs, labels=labels, itm_labels=torch.tensor([1, 0]),
                    generator=torch.Generator().manual_seed(0))
    assert out.logits.dtype == torch.bfloat16  # the model ran in bf16 ...
    assert out.wpa_distance.dtype == torch.float32  # ... WPA/IPOT in fp32
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in out.loss_dict.values())
    out.loss.backward()
    gradients = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in gradients)
    assert model.vilt.encoder.layers[0].attn.qkv.weight.grad.abs().sum() > 0
