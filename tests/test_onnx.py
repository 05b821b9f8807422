"""scripts/export_onnx.py: the exported DETR (and ViLT VQA) runs in onnxruntime within 1e-4 of PyTorch at other batch
sizes, image sizes (and text lengths) than the traced ones, with padding, and the graph holds only standard ONNX
operators (no NMS)."""

import sys
from pathlib import Path

import onnx
import pytest
import torch
from conftest import tiny_detr_config
from vilt_testing import tiny_vilt_config

import detrvilt
from detrvilt.conversion.onnx_export import example_inputs, export_onnx, onnx_max_difference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import export_onnx as export_script  # noqa: E402


def _export(folder, model):
    model.save_pretrained(folder / "model")
    result = export_script.main(["--model_dir", str(folder / "model"), "--output", str(folder / "model.onnx"),
                                 "--example_height", "96", "--example_width", "128"])
    return model, folder / "model.onnx", result


@pytest.fixture(scope="module")
def detr_exported(tmp_path_factory):
    torch.manual_seed(0)
    model = detrvilt.DetrForObjectDetection(tiny_detr_config(num_queries=5, encoder_layers=1, decoder_layers=2))
    return _export(tmp_path_factory.mktemp("detr_onnx"), model.eval())


@pytest.fixture(scope="module")
def vilt_exported(tmp_path_factory):
    torch.manual_seed(0)
    return _export(tmp_path_factory.mktemp("vilt_onnx"), detrvilt.ViltForQuestionAnswering(tiny_vilt_config()).eval())


def test_script_exports_and_checks_detr(detr_exported):
    _, path, result = detr_exported
    assert path.is_file() and result["output"] == str(path) and result["model_class"] == "DetrForObjectDetection"
    assert set(result["max_difference"]) == {"logits", "pred_boxes"}
    assert max(result["max_difference"].values()) < 1e-4


@pytest.mark.parametrize("batch_size, height, width", [(1, 64, 64), (4, 75, 203)])
def test_detr_onnxruntime_matches_pytorch_at_other_sizes(detr_exported, batch_size, height, width):
    model, path, _ = detr_exported
    inputs = example_inputs(model, batch_size, height, width, seed=batch_size)
    differences = onnx_max_difference(model, path, inputs)
    assert differences["logits"] < 1e-4 and differences["pred_boxes"] < 1e-4, differences


@pytest.mark.slow  # a second export (about 10 s of CPU); DETR's above is the default check
@pytest.mark.parametrize("batch_size, height, width, text_length", [(1, 64, 64, 3), (3, 128, 224, 12)])
def test_vilt_onnxruntime_matches_pytorch_at_other_sizes(vilt_exported, batch_size, height, width, text_length):
    model, path, result = vilt_exported
    assert result["max_difference"]["logits"] < 1e-4
    inputs = example_inputs(model, batch_size, height, width, text_length, seed=batch_size)
    assert onnx_max_difference(model, path, inputs)["logits"] < 1e-4


def test_detr_graph_has_dynamic_axes_and_only_standard_operators(detr_exported):
    _, path, _ = detr_exported
    graph = onnx.load(str(path)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["pixel_values"][1] == 3
    assert all(isinstance(d, str) for d in dims["pixel_values"][:1] + dims["pixel_values"][2:]), dims
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    assert not {node.op_type for node in graph.node} & {"NonMaxSuppression", "TopK"}


def test_export_rejects_other_models(tmp_path):
    with pytest.raises(TypeError, match="model must be"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="batch of at least 2"):
        export_onnx(detrvilt.DetrForObjectDetection(tiny_detr_config()), tmp_path / "x.onnx", example_size=(1, 64, 64))
