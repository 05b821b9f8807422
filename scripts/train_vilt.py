"""Train and evaluate ViLT with `transformers.Trainer`: pretraining (MLM + ITM + WPA), VQA, NLVR2 or retrieval.

    python scripts/train_vilt.py --task vqa --output_dir out/vilt_vqa --dataset synthetic \
        --hidden_size 128 --num_hidden_layers 4 --num_attention_heads 4 --intermediate_size 512 \
        --patch_size 16 --image_size 64 --shortest_edge 64 --synthetic_image_size 64 --max_steps 500
    python scripts/train_vilt.py --task vqa --model_name_or_path out/vilt_pretrain --dataset files \
        --train_file v2_OpenEnded_mscoco_train2014_questions.json \
        --train_annotations_file v2_mscoco_train2014_annotations.json --train_images_dir train2014 \
        --eval_file v2_OpenEnded_mscoco_val2014_questions.json \
        --eval_annotations_file v2_mscoco_val2014_annotations.json --eval_images_dir val2014 --output_dir out/vqa

Data as transformers' examples take it: `--dataset_name` (a Hub dataset id or a local folder, with
`--dataset_config_name`, `--train_split_name`, `--eval_split_name`), or `--dataset` (see `--help`). Every
`TrainingArguments` option works (`--bf16`, `--gradient_accumulation_steps`, `--eval_strategy`,
`--resume_from_checkpoint`, ...); the defaults are the official ViLT optimization (AdamW 0.9/0.98, eps 1e-8, lr 1e-4,
weight decay 0.01 but not on biases and LayerNorms, 10% linear warmup then linear decay to 0, x10 for the VQA/NLVR2
head). A --model_name_or_path pretraining folder starts a fine-tuning task (pretraining heads dropped, task head
created). The output folder gets `config.json` (VQA: the answers as `id2label`), `model.safetensors`, the processor
files and `train_summary.json`.
"""

from transformers import HfArgumentParser

from detrvilt.training.vilt.arguments import ViltDataArguments, ViltModelArguments, ViltTrainingArguments
from detrvilt.training.vilt.recipes import run_vilt_trainer_training


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ViltModelArguments, ViltDataArguments, ViltTrainingArguments),
                              description=__doc__.split("\n\n")[0])
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return run_vilt_trainer_training(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
