"""ViLT's pretraining objectives and downstream heads, each computing its loss in `forward(labels=...)`.

- [`ViltForPreTraining`]: masked language modeling (MLM head: dense + activation + LayerNorm, then a decoder to
  the vocabulary, not tied to the word embeddings, as the official code), image-text matching (ITM: 2-way linear
  on the pooled output) and word-patch alignment (WPA, ``wpa_vilt.py``).
- [`ViltForQuestionAnswering`]: 768 -> 1536 -> LayerNorm -> GELU -> answers on the pooled output; binary
  cross-entropy against soft VQA scores, multiplied by the number of answers (the official recipe, from
  BAN-VQA).
- [`ViltForImagesAndTextClassification`]: NLVR2's "pair" setting: the text with each of the `num_images` images
  (modality types 1, 2, ...), pooled outputs concatenated, then the same MLP shape to `num_labels`.
- [`ViltForImageAndTextRetrieval`]: a 1-output rank head, initialised from the ITM head's "match" row, trained
  with cross-entropy over one positive and K negative texts per image (the official ``compute_irtr``; transformers'
  port has no training loss).

Settings follow dandelin/ViLT (``vilt_module.py``, ``objectives.py``, ``heads.py``). Module names follow
transformers' ViLT classes (``vilt``, ``mlm_score``, ``classifier``, ``rank_output``) so their checkpoints convert.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_vilt import ViltConfig
from .modeling_vilt import _ACTIVATIONS, ViltModel, ViltModelOutput, ViltPreTrainedModel
from .wpa_vilt import wpa_distance, wpa_loss, wpa_masks


@dataclass
class ViltForPreTrainingOutput(ModelOutput):
    """Outputs of [`ViltForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, with labels): `mlm_loss + itm_loss + wpa_loss_weight * wpa_loss`,
            over the objectives that ran.
        loss_dict (`dict[str, torch.FloatTensor]`, with labels): `mlm_loss`, `itm_loss`, `wpa_loss` (unweighted).
        logits (`torch.FloatTensor` of shape `(batch_size, text_length, vocab_size)`): MLM scores of every text
            token (when `"mlm"` is an objective).
        itm_logits (`torch.FloatTensor` of shape `(batch_size, 2)`): ITM scores, index 1 = "matched" (when `"itm"`
            is an objective).
        wpa_distance (`torch.FloatTensor` of shape `(batch_size,)`): the optimal-transport distance of each pair
            (when WPA ran).
        pooler_output, image_token_mask, patch_index, hidden_states, attentions: see [`ViltModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    wpa_distance: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    image_token_mask: torch.BoolTensor | None = None
    patch_index: torch.LongTensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class ViltClassificationOutput(ModelOutput):
    """Outputs of [`ViltForQuestionAnswering`], [`ViltForImagesAndTextClassification`] and
    [`ViltForImageAndTextRetrieval`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, with labels): the head's loss.
        loss_dict (`dict[str, torch.FloatTensor]`, with labels): the same under its name (`vqa_loss`,
            `nlvr2_loss`, `irtr_loss`).
        logits (`torch.FloatTensor`): `(batch_size, num_labels)` answer scores (VQA, before the sigmoid) / class
            scores (NLVR2), or `(batch_size, num_texts)` match scores (retrieval).
        pooler_output (`torch.FloatTensor`): the pooled [CLS] of every pair, `(pairs, hidden_size)`.
        hidden_states, attentions: see [`ViltModelOutput`]; for NLVR2 a list with one tuple per image.
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple | list | None = None
    attentions: tuple | list | None = None


def _classifier(in_features: int, hidden: int, num_labels: int) -> nn.Sequential:
    """Linear -> LayerNorm -> GELU -> Linear: the official VQA (`hidden = 2 * hidden_size`) and NLVR2 heads."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, num_labels))


class ViltPredictionHeadTransform(nn.Module):
    """dense -> activation -> LayerNorm (BERT's `BertPredictionHeadTransform`)."""

    def __init__(self, config: ViltConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = _ACTIVATIONS[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.text_layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.activation(self.dense(x)))


class ViltMLMHead(nn.Module):
    """BERT's prediction head: the transform, then a decoder to the vocabulary (with its own bias)."""

    def __init__(self, config: ViltConfig):
        super().__init__()
        self.transform = ViltPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))  # (B, T, V)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled tokens (label -100 elsewhere), in fp32; 0 when none is labelled."""
    labels = labels.to(logits.device)
    total = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
    return total / (labels != -100).sum().clamp(min=1)


def _check_labels(name: str, labels, shape: tuple, floating: bool) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if tuple(labels.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(labels.shape)}")
    if floating and not labels.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (soft scores), got {labels.dtype}")
    if not floating and labels.is_floating_point():
        raise TypeError(f"{name} must be an integer tensor (class indices), got {labels.dtype}")


def _text_shape(input_ids, inputs_embeds) -> tuple:
    text = input_ids if input_ids is not None else inputs_embeds
    if not isinstance(text, torch.Tensor):
        raise ValueError("give exactly one of input_ids and inputs_embeds, as a torch.Tensor")
    return tuple(text.shape)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in fp32: `(B, C)` scores and `(B,)` class indices (moved to the scores' device)."""
    return F.cross_entropy(logits.float(), labels.to(logits.device))


def _classification_output(
    outputs: ViltModelOutput,
    logits: torch.Tensor,
    loss: torch.Tensor | None,
    loss_name: str,
    return_dict: bool,
    regroup: Callable[[tuple | None], tuple | list | None] | None = None,
) -> ViltClassificationOutput | tuple:
    """The output of a head on the pooled [CLS]: `loss` (also under `loss_name` in `loss_dict`), `logits`, and
    `outputs`' pooled output, hidden states and attentions (the last two through `regroup`, when given)."""
    regroup = regroup if regroup is not None else (lambda states: states)
    output = ViltClassificationOutput(
        loss=loss, loss_dict=None if loss is None else {loss_name: loss}, logits=logits,
        pooler_output=outputs.pooler_output, hidden_states=regroup(outputs.hidden_states),
        attentions=regroup(outputs.attentions),
    )
    return output if return_dict else output.to_tuple()


class ViltForPreTraining(ViltPreTrainedModel):
    """ViLT with its pretraining heads: MLM, ITM and WPA (`config.pretraining_objectives` says which run).

    The official recipe runs two passes per step, and so can this class (call it twice and add the losses): MLM on
    whole-word-masked text with the matching images (`labels`), and ITM + WPA on unmasked text with half of the
    images replaced by other images (`itm_labels`). Given both label sets, one call computes all three objectives
    on the same pass (cheaper; the text is then masked during ITM).
    """

    def __init__(self, config: ViltConfig):
        super().__init__(config)
        self.vilt = ViltModel(config)
        self.mlm_score = ViltMLMHead(config)
        self.itm_score = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_score.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.mlm_score.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        itm_labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        generator: torch.Generator | None = None,
        mlm_masked_only: bool = False,
    ) -> ViltForPreTrainingOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, inputs_embeds, generator: see
                [`ViltModel.forward`].
            labels (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*): MLM targets: the original
                token id at masked positions, -100 elsewhere. Needs `"mlm"` in `config.pretraining_objectives`.
            itm_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): 1 where image and text match, 0
                where the image was replaced. Gives the ITM loss and, with `"wpa"`, the WPA loss.
            mlm_masked_only (`bool`, *optional*, defaults to `False`): with `labels`, run the MLM decoder only on the
                labelled tokens (the loss is the same; training is cheaper, the vocabulary projection being the
                largest matrix). `logits` is then `(num_labelled_tokens, vocab_size)`, in row-major token order.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        objectives = set(config.pretraining_objectives)
        batch_size, text_length = _text_shape(input_ids, inputs_embeds)[:2]
        if labels is not None:
            if "mlm" not in objectives:
                raise ValueError(
                    "labels (MLM targets) were given but 'mlm' is not in "
                    f"pretraining_objectives={config.pretraining_objectives}"
                )
            _check_labels("labels", labels, (batch_size, text_length), floating=False)
        if itm_labels is not None:
            if not objectives & {"itm", "wpa"}:
                raise ValueError(
                    "itm_labels were given but neither 'itm' nor 'wpa' is in "
                    f"pretraining_objectives={config.pretraining_objectives}"
                )
            _check_labels("itm_labels", itm_labels, (batch_size,), floating=False)

        outputs = self.vilt(
            input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            generator=generator,
        )
        sequence = outputs.last_hidden_state  # (B, T + 1 + L, D)
        text_features, image_features = sequence[:, :text_length], sequence[:, text_length:]

        mlm_labels = labels
        if "mlm" not in objectives:
            logits = None
        elif mlm_masked_only and labels is not None:
            labelled = labels.to(sequence.device) != -100  # (B, T)
            logits = self.mlm_score(text_features[labelled])  # (N, V)
            mlm_labels = labels.to(sequence.device)[labelled][None]  # (1, N)
        else:
            logits = self.mlm_score(text_features)  # (B, T, V)
        itm_logits = self.itm_score(outputs.pooler_output) if "itm" in objectives else None  # (B, 2)
        loss_dict = {}
        distance = None
        if labels is not None:
            loss_dict["mlm_loss"] = masked_lm_loss(logits if logits.ndim == 3 else logits[None], mlm_labels)
        if itm_labels is not None:
            itm_labels = itm_labels.to(sequence.device)
            if "itm" in objectives:
                loss_dict["itm_loss"] = _cross_entropy(itm_logits, itm_labels.long())
            if "wpa" in objectives:
                if attention_mask is None:
                    attention_mask = torch.ones(batch_size, text_length, dtype=torch.bool, device=sequence.device)
                text_valid, image_valid = wpa_masks(attention_mask.to(sequence.device), outputs.image_token_mask)
                distance = wpa_distance(
                    text_features, image_features, text_valid, image_valid,
                    config.ipot_beta, config.ipot_iterations, config.ipot_inner_iterations,
                )
                loss_dict["wpa_loss"] = wpa_loss(distance, itm_labels)
        loss = None
        if loss_dict:
            weights = {"wpa_loss": config.wpa_loss_weight}
            loss = sum(weights.get(name, 1.0) * value for name, value in loss_dict.items())

        output = ViltForPreTrainingOutput(
            loss=loss,
            loss_dict=loss_dict or None,
            logits=logits,
            itm_logits=itm_logits,
            wpa_distance=distance,
            pooler_output=outputs.pooler_output,
            image_token_mask=outputs.image_token_mask,
            patch_index=outputs.patch_index,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class ViltForQuestionAnswering(ViltPreTrainedModel):
    """ViLT with the VQA head: a 2-layer MLP on the pooled output, one score per answer (`num_labels`, 3129 for
    VQAv2), trained with binary cross-entropy against soft scores."""

    def __init__(self, config: ViltConfig):
        super().__init__(config)
        self.vilt = ViltModel(config)
        self.classifier = _classifier(config.hidden_size, 2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> ViltClassificationOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, inputs_embeds, generator: see
                [`ViltModel.forward`].
            labels (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*): soft answer scores in
                [0, 1] (VQA's min(#annotators who gave it / 3, 1)). The loss is the mean binary cross-entropy
                times `num_labels`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        batch_size = _text_shape(input_ids, inputs_embeds)[0]
        if labels is not None:
            _check_labels("labels", labels, (batch_size, self.config.num_labels), floating=True)
        outputs = self.vilt(
            input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            generator=generator, pooled_output_only=True,
        )
        logits = self.classifier(outputs.pooler_output)  # (B, num_labels)
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float()) * labels.shape[1]
        return _classification_output(outputs, logits, loss, "vqa_loss", return_dict)


class ViltForImagesAndTextClassification(ViltPreTrainedModel):
    """ViLT for one text with several images (NLVR2: two), the "pair" setting of the paper.

    Each image is paired with the text and gets its own modality type (1, 2, ...); all pairs run as one batch;
    the pooled outputs of an example's pairs are concatenated and classified by an MLP
    (`num_images * hidden -> num_images * hidden -> LayerNorm -> GELU -> num_labels`).
    """

    def __init__(self, config: ViltConfig):
        super().__init__(config)
        if config.num_images < 1:
            raise ValueError(
                "ViltForImagesAndTextClassification needs config.num_images >= 1 (2 for NLVR2), "
                f"got {config.num_images}"
            )
        self.vilt = ViltModel(config)
        width = config.num_images * config.hidden_size
        self.classifier = _classifier(width, width, config.num_labels)
        self.post_init()

    @torch.no_grad()
    def init_second_image_modality(self) -> None:
        """Copy the image modality type (row 1) into the rows of the further images, as the official NLVR2
        fine-tuning does when it starts from a pretrained (2-modality) checkpoint."""
        table = self.vilt.embeddings.modality_type_embeddings.weight
        table[2:] = table[1]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> ViltClassificationOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask, token_type_ids, inputs_embeds, generator: see [`ViltModel.forward`].
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_images, num_channels, height, width)`):
                the images of each example (`(batch_size, num_channels, height, width)` when `num_images == 1`).
            pixel_mask (`torch.Tensor` of shape `(batch_size, num_images, height, width)`, *optional*).
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class indices; cross-entropy loss.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 4:
            pixel_values = pixel_values[:, None]
            pixel_mask = pixel_mask[:, None] if isinstance(pixel_mask, torch.Tensor) else pixel_mask
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 5:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(
                f"pixel_values must be (batch_size, num_images, num_channels, height, width), got {shape}"
            )
        batch_size, num_images = pixel_values.shape[:2]
        if num_images != config.num_images:
            raise ValueError(
                f"pixel_values holds {num_images} images per example but the model takes num_images="
                f"{config.num_images} (one modality type each, "
                f"modality_type_vocab_size={config.modality_type_vocab_size})"
            )
        if pixel_mask is not None and (not isinstance(pixel_mask, torch.Tensor) or pixel_mask.ndim != 4
                                       or tuple(pixel_mask.shape[:2]) != (batch_size, num_images)):
            shape = tuple(pixel_mask.shape) if isinstance(pixel_mask, torch.Tensor) else type(pixel_mask).__name__
            raise ValueError(f"pixel_mask must be (batch_size, num_images, height, width), got {shape}")
        if labels is not None:
            _check_labels("labels", labels, (batch_size,), floating=False)

        def repeat(value):  # (B, ...) -> (num_images * B, ...), image-major: all first images, then all second ...
            return None if value is None else value.repeat(num_images, *([1] * (value.ndim - 1)))

        # (B, n, ...) -> (n * B, ...) in the same image-major order
        images = pixel_values.transpose(0, 1).flatten(0, 1)
        masks = None if pixel_mask is None else pixel_mask.transpose(0, 1).flatten(0, 1)
        modality = torch.arange(1, num_images + 1, device=pixel_values.device).repeat_interleave(batch_size)
        if isinstance(input_ids, torch.Tensor) and input_ids.shape[0] != batch_size:
            raise ValueError(
                f"input_ids has batch size {input_ids.shape[0]} but pixel_values has batch size {batch_size}"
            )
        outputs = self.vilt(
            repeat(input_ids), repeat(attention_mask), repeat(token_type_ids), images, masks, repeat(inputs_embeds),
            image_token_type_idx=modality, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True, generator=generator,
            pooled_output_only=True,
        )
        pooled = outputs.pooler_output.view(num_images, batch_size, -1)  # (n, B, D)
        logits = self.classifier(pooled.transpose(0, 1).flatten(1))  # (B, n*D) -> (B, num_labels)
        loss = None if labels is None else _cross_entropy(logits, labels)

        def per_image(states):  # one tuple per image, as transformers returns them
            if states is None:
                return None
            return [tuple(s.view(num_images, batch_size, *s.shape[1:])[i] for s in states) for i in range(num_images)]

        return _classification_output(outputs, logits, loss, "nlvr2_loss", return_dict, regroup=per_image)


class ViltForImageAndTextRetrieval(ViltPreTrainedModel):
    """ViLT with the retrieval rank head: one match score per (image, text) pair from the pooled output.

    Training follows the official recipe: each image comes with `num_texts` candidate texts (its caption and K
    negatives, K = 15 in the paper) and the loss is the cross-entropy of the scores over the candidates. Start
    the rank head from a pretrained ITM head with [`init_rank_output_from_itm`] or [`from_pretraining_model`].
    """

    def __init__(self, config: ViltConfig):
        super().__init__(config)
        self.vilt = ViltModel(config)
        self.rank_output = nn.Linear(config.hidden_size, 1)
        self.post_init()

    @torch.no_grad()
    def init_rank_output_from_itm(self, itm_score: nn.Linear) -> None:
        """Initialise the rank head from an ITM head's "match" row (index 1), as the official fine-tuning does."""
        if not isinstance(itm_score, nn.Linear) or tuple(itm_score.weight.shape) != (2, self.config.hidden_size):
            raise ValueError(f"itm_score must be an nn.Linear({self.config.hidden_size}, 2), got {itm_score!r}")
        self.rank_output.weight.copy_(itm_score.weight[1:])
        self.rank_output.bias.copy_(itm_score.bias[1:])

    @classmethod
    def from_pretraining_model(cls, model: ViltForPreTraining) -> "ViltForImageAndTextRetrieval":
        """A retrieval model with `model`'s transformer and a rank head from its ITM head's "match" row."""
        if not isinstance(model, ViltForPreTraining):
            raise TypeError(f"model must be a ViltForPreTraining, got {type(model).__name__}")
        parameter = next(model.parameters())
        retrieval = cls(model.config).to(device=parameter.device, dtype=parameter.dtype)
        retrieval.vilt.load_state_dict(model.vilt.state_dict())
        retrieval.init_rank_output_from_itm(model.itm_score)
        return retrieval.train(model.training)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> ViltClassificationOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)` or `(batch_size, num_texts,
                text_length)`): one text per image, or `num_texts` candidate texts per image (each image is
                embedded once and paired with each of its texts). `attention_mask` and `token_type_ids` (and
                `inputs_embeds`, with a trailing `hidden_size`) have the same leading shape.
            pixel_values, pixel_mask, generator: see [`ViltModel.forward`] (one image per row of `input_ids`).
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): index of each image's matching text
                among its `num_texts` candidates (0 in the official data layout). Needs the 3-D text layout; the
                loss is the cross-entropy of the `(batch_size, num_texts)` scores.

        Returns:
            `logits` of shape `(batch_size, num_texts)` (`(batch_size, 1)` for 2-D text inputs).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        shape = _text_shape(input_ids, inputs_embeds)
        grouped = len(shape) == (3 if input_ids is not None else 4)
        batch_size, num_texts = (shape[0], shape[1]) if grouped else (shape[0], 1)
        if labels is not None:
            if not grouped:
                raise ValueError(
                    "labels need the candidate texts of each image: input_ids of shape (batch_size, num_texts, "
                    f"text_length), got shape {shape}"
                )
            _check_labels("labels", labels, (batch_size,), floating=False)

        def flat(value):  # (B, K, ...) -> (B*K, ...)
            return value.flatten(0, 1) if grouped and isinstance(value, torch.Tensor) else value

        outputs = self.vilt(
            flat(input_ids), flat(attention_mask), flat(token_type_ids), pixel_values, pixel_mask, flat(inputs_embeds),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            generator=generator, texts_per_image=num_texts, pooled_output_only=True,
        )
        logits = self.rank_output(outputs.pooler_output).view(batch_size, num_texts)  # (B, K)
        loss = None if labels is None else _cross_entropy(logits, labels)
        return _classification_output(outputs, logits, loss, "irtr_loss", return_dict)


__all__ = [
    "ViltClassificationOutput",
    "ViltForImageAndTextRetrieval",
    "ViltForImagesAndTextClassification",
    "ViltForPreTraining",
    "ViltForPreTrainingOutput",
    "ViltForQuestionAnswering",
    "ViltMLMHead",
]
