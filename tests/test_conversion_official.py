"""Official checkpoints (facebookresearch/detr .pth, dandelin/ViLT .ckpt) and transformers folders through
scripts/convert_checkpoint.py.

The official files are built here from random transformers models: their weights are renamed into the official key
layout by tables written in this test (the facts of transformers' own conversion scripts, read in the other
direction), saved as the official repositories save them, converted by the script, and the result must compute what
the transformers model computes. The two mappings (the test's and the library's) are written independently, so a
wrong name or a wrong q/k/v order on either side fails the comparison.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import pytest
import torch
import transformers
from conftest import padded_pair
from vilt_testing import TINY, hf_vilt, unshuffled_transformers_patches, vilt_batch

import detrvilt
from detrvilt.conversion.detr.from_official import convert_official_detr, official_detr_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import convert_checkpoint  # noqa: E402

# transformers DETR name -> official name (encoder and decoder layers differ in their norms).
DETR_TO_OFFICIAL = [
    (r"^model\.backbone\.model\.", "backbone.0.body."),
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_position_embeddings\.", "query_embed."),
    (r"^model\.decoder\.layernorm\.", "transformer.decoder.norm."),
    (r"^model\.(encoder|decoder)\.layers\.", r"transformer.\1.layers."),
    (r"\.o_proj\.", ".out_proj."),
    (r"\.encoder_attn\.", ".multihead_attn."),
    (r"\.mlp\.fc1\.", ".linear1."),
    (r"\.mlp\.fc2\.", ".linear2."),
    (r"(encoder\.layers\.\d+)\.self_attn_layer_norm\.", r"\1.norm1."),
    (r"(encoder\.layers\.\d+)\.final_layer_norm\.", r"\1.norm2."),
    (r"(decoder\.layers\.\d+)\.self_attn_layer_norm\.", r"\1.norm1."),
    (r"(decoder\.layers\.\d+)\.multihead_attn_layer_norm\.", r"\1.norm2."),
    (r"(decoder\.layers\.\d+)\.encoder_attn_layer_norm\.", r"\1.norm2."),
    (r"(decoder\.layers\.\d+)\.final_layer_norm\.", r"\1.norm3."),
    (r"^class_labels_classifier\.", "class_embed."),
    (r"^bbox_predictor\.", "bbox_embed."),
]
# transformers ViLT name -> official name.
VILT_TO_OFFICIAL = [
    (r"^vilt\.embeddings\.text_embeddings\.", "text_embeddings."),
    (r"^vilt\.embeddings\.token_type_embeddings\.", "token_type_embeddings."),
    (r"^vilt\.embeddings\.cls_token$", "transformer.cls_token"),
    (r"^vilt\.embeddings\.position_embeddings$", "transformer.pos_embed"),
    (r"^vilt\.embeddings\.patch_embeddings\.projection\.", "transformer.patch_embed.proj."),
    (r"^vilt\.encoder\.layer\.(\d+)\.layernorm_before\.", r"transformer.blocks.\1.norm1."),
    (r"^vilt\.encoder\.layer\.(\d+)\.layernorm_after\.", r"transformer.blocks.\1.norm2."),
    (r"^vilt\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"transformer.blocks.\1.attn.proj."),
    (r"^vilt\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"transformer.blocks.\1.mlp.fc1."),
    (r"^vilt\.encoder\.layer\.(\d+)\.output\.dense\.", r"transformer.blocks.\1.mlp.fc2."),
    (r"^vilt\.layernorm\.", "transformer.norm."),
    (r"^vilt\.pooler\.", "pooler."),
    (r"^mlm_score\.decoder\.bias$", "mlm_score.bias"),
]
VILT_HEADS = {"ViltForQuestionAnswering": "vqa_classifier.", "ViltForImagesAndTextClassification": "nlvr2_classifier."}


def _rename(key, table):
    for pattern, replacement in table:
        key = re.sub(pattern, replacement, key)
    return key


@torch.no_grad()
def _randomize_detr_(model):
    generator = torch.Generator().manual_seed(0)
    for name, tensor in model.state_dict().items():
        if name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
        elif tensor.is_floating_point():
            tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.05)
    return model


def official_detr_state_dict(hf_model) -> dict:
    official, pieces = {}, {}
    for key, value in hf_model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        key = _rename(key, DETR_TO_OFFICIAL)
        match = re.match(r"^(.*_attn)\.([qkv])_proj\.(weight|bias)$", key)
        if match:
            pieces.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = value
        else:
            official[key] = value.clone()
    for (prefix, kind), parts in pieces.items():  # nn.MultiheadAttention stacks query, key, value
        official[f"{prefix}.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return official


def official_vilt_state_dict(hf_model) -> dict:
    official, pieces = {}, {}
    head = VILT_HEADS.get(type(hf_model).__name__)
    for key, value in hf_model.state_dict().items():
        key = _rename(key, VILT_TO_OFFICIAL)
        if head and key.startswith("classifier."):
            key = head + key.removeprefix("classifier.")
        match = re.match(r"^vilt\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$", key)
        if match:
            pieces.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = value
        else:
            official[key] = value.clone()
    for (layer, kind), parts in pieces.items():  # timm's fused qkv: query, key, value stacked
        official[f"transformer.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]])
    official["text_embeddings.position_ids"] = torch.arange(official[
        "text_embeddings.position_embeddings.weight"].shape[0])[None]
    return official


class AttributeDict(dict):
    """Lightning's hyper-parameter dict, as pickled into .ckpt files (a dict subclass of another package)."""


AttributeDict.__module__ = "pytorch_lightning.utilities.parsing"


def _save_lightning_checkpoint(path, state_dict, config):
    module = type(sys)("pytorch_lightning.utilities.parsing")
    module.AttributeDict = AttributeDict
    names = ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing")
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update({"pytorch_lightning": type(sys)("pytorch_lightning"),
                        "pytorch_lightning.utilities": type(sys)("pytorch_lightning.utilities"),
                        "pytorch_lightning.utilities.parsing": module})
    try:
        torch.save({"epoch": 9, "global_step": 200000, "state_dict": state_dict,
                    "hyper_parameters": AttributeDict(config=config)}, path)
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name)
            else:
                sys.modules[name] = value


def _hf_detr():
    config = transformers.DetrConfig(backbone="resnet18", use_timm_backbone=True, use_pretrained_backbone=False,
                                     num_labels=4, d_model=32, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, num_queries=8, auxiliary_loss=False)
    return _randomize_detr_(transformers.DetrForObjectDetection(config)).eval()


def assert_same_detections(ours, hf_model):
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        expected = hf_model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        actual = ours(pixel_values, pixel_mask=pixel_mask)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=0)


def test_official_detr_pth_converts_and_matches(tmp_path):
    hf_model = _hf_detr()
    args = argparse.Namespace(backbone="resnet18", nheads=4, dilation=False, aux_loss=True, set_cost_class=1,
                              set_cost_bbox=5, set_cost_giou=2, bbox_loss_coef=5, giou_loss_coef=2, eos_coef=0.1,
                              dropout=0.1, position_embedding="sine", pre_norm=False)
    torch.save({"model": official_detr_state_dict(hf_model), "args": args, "epoch": 499}, tmp_path / "detr.pth")
    (tmp_path / "names.json").write_text(json.dumps({str(i): f"thing{i}" for i in range(4)}))
    result = convert_checkpoint.main(["--input", str(tmp_path / "detr.pth"), "--output_dir", str(tmp_path / "out"),
                                      "--id2label_file", str(tmp_path / "names.json")])
    assert result["source"] == "official_detr" and result["model_class"] == "DetrForObjectDetection"
    assert {"README.md", "modeling_detr.py", "preprocessor_config.json", "model.safetensors"} <= set(result["files"])
    ours = detrvilt.DetrForObjectDetection.from_pretrained(tmp_path / "out").eval()
    assert ours.config.id2label[3] == "thing3" and ours.config.encoder_attention_heads == 4
    assert ours.config.decoder_chained_norm is False and ours.config.backbone == "resnet18"
    assert_same_detections(ours, hf_model)


def test_transformers_detr_folder_converts_with_its_processor_size(tmp_path):
    hf_model = _hf_detr()
    hf_model.save_pretrained(tmp_path / "hf")
    transformers.DetrImageProcessor(size={"shortest_edge": 480, "longest_edge": 640}).save_pretrained(tmp_path / "hf")
    result = convert_checkpoint.main(["--input", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "ours")])
    assert result["source"] == "transformers" and result["model_class"] == "DetrForObjectDetection"
    assert {"README.md", "modeling_detr.py", "preprocessor_config.json"} <= set(result["files"])
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "ours")
    assert processor.size == {"shortest_edge": 480, "longest_edge": 640}
    assert_same_detections(detrvilt.DetrForObjectDetection.from_pretrained(tmp_path / "ours").eval(), hf_model)


def test_official_coco_detr_gets_coco_class_names():
    hf_model = _hf_detr()
    state_dict = official_detr_state_dict(hf_model)
    state_dict["class_embed.weight"], state_dict["class_embed.bias"] = torch.randn(92, 32), torch.randn(92)
    config = official_detr_config(state_dict, argparse.Namespace(nheads=4))
    assert config.num_labels == 91 and config.id2label[1] == "person" and config.id2label[90] == "toothbrush"
    assert config.id2label[0] == config.id2label[12] == "N/A"
    assert sum(name != "N/A" for name in config.id2label.values()) == 80
    assert config.backbone == "resnet18"  # told by the blocks of layer3 and the absence of a third convolution


def test_official_detr_conversion_names_unmapped_keys():
    state_dict = official_detr_state_dict(_hf_detr())
    state_dict["transformer.decoder.layers.0.surprise.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="surprise"):
        convert_official_detr({"model": state_dict})


def _tiny_hparams(**extra):
    return {"num_heads": TINY["num_attention_heads"], "max_image_len": -1, "drop_rate": 0.1, **extra}


@pytest.mark.parametrize("cls_name, ours_name", [
    ("ViltForQuestionAnswering", "ViltForQuestionAnswering"),
    ("ViltForImageAndTextRetrieval", "ViltForImageAndTextRetrieval"),
])
def test_official_vilt_task_checkpoints_convert_and_match(tmp_path, cls_name, ours_name):
    hf_model = hf_vilt(cls_name, dict(TINY, layer_norm_eps=1e-6))
    state_dict = official_vilt_state_dict(hf_model)
    if cls_name == "ViltForImageAndTextRetrieval":  # the official retrieval run keeps the (frozen) ITM head
        state_dict["itm_score.fc.weight"], state_dict["itm_score.fc.bias"] = torch.randn(2, 32), torch.randn(2)
    _save_lightning_checkpoint(tmp_path / "vilt.ckpt", state_dict, _tiny_hparams())
    (tmp_path / "answers.json").write_text(json.dumps({str(i): f"answer{i}" for i in range(5)}))
    names = ["--id2label_file", str(tmp_path / "answers.json")] if cls_name == "ViltForQuestionAnswering" else []
    result = convert_checkpoint.main(["--input", str(tmp_path / "vilt.ckpt"), "--output_dir", str(tmp_path / "out"),
                                      *names])
    assert result["source"] == "official_vilt" and result["model_class"] == ours_name
    assert {"processor_config.json", "tokenizer.json", "heads_vilt.py", "README.md"} <= set(result["files"])
    ours = getattr(detrvilt, ours_name).from_pretrained(tmp_path / "out").eval()
    assert ours.config.layer_norm_eps == 1e-6 and ours.config.text_layer_norm_eps == 1e-12
    if names:
        assert ours.config.id2label[4] == "answer4" and ours.config.num_labels == 5
    inputs = vilt_batch()
    with torch.no_grad(), unshuffled_transformers_patches():
        expected = hf_model(**inputs).logits
    with torch.no_grad():
        actual = ours(**inputs).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_official_vilt_nlvr2_checkpoint_converts_and_matches(tmp_path):
    hf_model = hf_vilt("ViltForImagesAndTextClassification", dict(TINY, layer_norm_eps=1e-6, num_labels=2))
    _save_lightning_checkpoint(tmp_path / "nlvr2.ckpt", official_vilt_state_dict(hf_model), _tiny_hparams())
    ours = convert_checkpoint.convert_checkpoint(tmp_path / "nlvr2.ckpt")[0]
    assert type(ours) is detrvilt.ViltForImagesAndTextClassification and ours.config.num_images == 2
    first, second = vilt_batch(seed=0), vilt_batch(sizes=((96, 128), (40, 100)), seed=1)
    inputs = dict(input_ids=first["input_ids"], attention_mask=first["attention_mask"],
                  pixel_values=torch.stack([first["pixel_values"], second["pixel_values"]], dim=1),
                  pixel_mask=torch.stack([first["pixel_mask"], second["pixel_mask"]], dim=1))
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).logits, hf_model(**inputs).logits, atol=1e-4, rtol=0)


def test_official_vilt_mlm_itm_checkpoint_keeps_the_itm_head(tmp_path):
    hf_model = hf_vilt("ViltForMaskedLM", dict(TINY, layer_norm_eps=1e-6))
    state_dict = official_vilt_state_dict(hf_model)
    itm_weight, itm_bias = torch.randn(2, 32), torch.randn(2)
    state_dict["itm_score.fc.weight"], state_dict["itm_score.fc.bias"] = itm_weight, itm_bias
    _save_lightning_checkpoint(tmp_path / "mlm_itm.ckpt", state_dict, _tiny_hparams(max_image_len=200))
    result = convert_checkpoint.main(["--input", str(tmp_path / "mlm_itm.ckpt"), "--output_dir", str(tmp_path / "o")])
    assert result["model_class"] == "ViltForPreTraining"
    ours = detrvilt.ViltForPreTraining.from_pretrained(tmp_path / "o").eval()
    assert ours.config.max_image_length == 200  # the run's setting, used in training only
    torch.testing.assert_close(ours.itm_score.weight, itm_weight, atol=0, rtol=0)
    inputs = vilt_batch()
    with torch.no_grad(), unshuffled_transformers_patches():
        expected = hf_model(**inputs).logits
    with torch.no_grad():
        actual = ours(**inputs)
    text = inputs["attention_mask"].bool()
    torch.testing.assert_close(actual.logits[text], expected[text], atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.itm_logits, actual.pooler_output @ itm_weight.T + itm_bias, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls_name, ours_name", [
    ("ViltForMaskedLM", "ViltForPreTraining"),  # dandelin/vilt-b32-mlm
    ("ViltForQuestionAnswering", "ViltForQuestionAnswering"),  # -finetuned-vqa
    ("ViltForImagesAndTextClassification", "ViltForImagesAndTextClassification"),  # -finetuned-nlvr2
    ("ViltForImageAndTextRetrieval", "ViltForImageAndTextRetrieval"),  # -finetuned-coco
])
def test_transformers_vilt_folders_convert_with_their_tokenizer(tmp_path, cls_name, ours_name):
    hf_model = hf_vilt(cls_name, TINY)
    hf_model.save_pretrained(tmp_path / "hf")
    from detrvilt.data import default_vilt_tokenizer

    default_vilt_tokenizer().save_pretrained(tmp_path / "hf")
    transformers.ViltImageProcessor(size={"shortest_edge": 288}).save_pretrained(tmp_path / "hf")
    model, processor, source = convert_checkpoint.convert_checkpoint(tmp_path / "hf")
    assert source == "transformers" and type(model).__name__ == ours_name
    assert processor.image_processor.shortest_edge == 288 and processor.tokenizer.vocab_size == 30522
    if cls_name == "ViltForQuestionAnswering":
        inputs = vilt_batch()
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).logits, hf_model(**inputs).logits, atol=1e-4, rtol=0)


def test_detect_source_rejects_unknown_inputs(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="input must be"):
        convert_checkpoint.convert_checkpoint(tmp_path / "weights.bin")
    with pytest.raises(ValueError, match="source must be"):
        convert_checkpoint.convert_checkpoint(tmp_path, source="caffe")
