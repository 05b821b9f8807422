"""Upload a training output folder to the Hub: model and processor with remote code, and a model card.

    python scripts/push_to_hub.py --output_dir outputs/demo/model --repo_id me/detr-shapes --private
    python scripts/push_to_hub.py --output_dir outputs/demo/model --repo_id me/detr-shapes --dry_run staged/
    python scripts/push_to_hub.py --output_dir outputs/demo/model --repo_id me/detr-shapes --space_id me/detr-demo

The card (hub_cards/) is filled from the folder's train_summary.json (hyper-parameters and evaluation). The token
comes from the HF_TOKEN variable or `hf auth login`, never from an argument, and is never printed. `--dry_run DIR`
writes exactly the files that would be uploaded into DIR (and the Space's, with `--space_id`, into DIR_space) and
sends nothing. `--space_id` also uploads a Gradio Space (app.py, requirements.txt, README front matter) that shows
the model with detrvilt's app (`python -m detrvilt.space`).
"""

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from detrvilt.hub import push_to_hub


@dataclass
class PushArguments:
    output_dir: str = field(metadata={"help": "Training output folder (config.json, weights, processor, "
                                              "train_summary.json)."})
    repo_id: str = field(metadata={"help": "Hub repository, 'user/name' or 'org/name' (created if missing)."})
    private: bool = field(default=True, metadata={
        "help": "Create the repository as private (--private false: public)."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message (default: 'Upload <name>')."})
    revision: str | None = field(default=None, metadata={
        "help": "Branch to upload to (created if missing); default: the main branch."})
    dry_run: str | None = field(default=None, metadata={
        "help": "Write what would be uploaded into this local folder instead of uploading."})
    dataset_name: str = field(default="synthetic", metadata={"help": "Evaluation data name shown on the card."})
    dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset id for the card's metadata."})
    dataset_split: str = field(default="validation", metadata={"help": "Evaluation split shown on the card."})
    license: str = field(default="apache-2.0", metadata={"help": "License identifier in the card's metadata."})
    space_id: str | None = field(default=None, metadata={
        "help": "Also stage / upload a Gradio Space 'user/name' that shows the model (detrvilt's app)."})
    space_requirement: str = field(default="detrvilt[space]", metadata={
        "help": "The Space's requirements.txt line for detrvilt, e.g. 'detrvilt[space] @ git+https://github.com/"
                "<you>/detrvilt' while detrvilt is not on a package index."})
    space_threshold: float = field(default=0.7, metadata={"help": "DETR Space: the score threshold it starts at."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
    plan = push_to_hub(args.output_dir, args.repo_id, private=args.private, commit_message=args.commit_message,
                       revision=args.revision, dry_run_dir=args.dry_run, dataset_name=args.dataset_name,
                       dataset_id=args.dataset_id, dataset_split=args.dataset_split, license=args.license,
                       space_id=args.space_id, space_requirement=args.space_requirement,
                       space_threshold=args.space_threshold)
    print(json.dumps(plan, indent=1))
    return plan


if __name__ == "__main__":
    main()
