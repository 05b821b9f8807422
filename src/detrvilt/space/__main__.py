"""Serve the Space app for one model: ``python -m detrvilt.space --model_id outputs/demo/model --port 7860``."""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from .app import build_app, load_space_model


@dataclass
class SpaceArguments:
    model_id: str = field(metadata={"help": "A saved detrvilt model folder, or a Hub repository id."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to serve on (0.0.0.0 inside a container)."})
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    threshold: float = field(default=0.7, metadata={"help": "DETR: the score threshold the slider starts at."})
    device: str = field(default="cpu", metadata={"help": "Where the model runs ('cpu', 'cuda')."})


def main(argv: list[str] | None = None) -> None:
    (args,) = HfArgumentParser(SpaceArguments).parse_args_into_dataclasses(args=argv)
    app = build_app(load_space_model(args.model_id, args.device), threshold=args.threshold)
    app.launch(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
