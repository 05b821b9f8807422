"""Draw pictures of what a saved DETR or ViLT learned, on your own image files.

    python scripts/visualize.py --model_dir out/detr --images a.jpg b.jpg --output_dir pictures
    python scripts/visualize.py --model_dir out/detr --images a.jpg --kinds encoder_attention --points 120,80 300,200
    python scripts/visualize.py --model_dir out/vilt --images a.jpg --captions "a dog on a couch"

DETR: predictions (all images in one grid), encoder self-attention at reference points and decoder cross-attention
of each detected object (one picture per image), object-query box centres over all the images. ViLT: word-patch
alignment (the IPOT plan of each word over the patches) and the text [CLS] attention, one picture per image.
"""

from transformers import HfArgumentParser

from detrvilt.viz.cli import VisualizeArguments, make_pictures


def main(argv: list[str] | None = None) -> list[str]:
    parser = HfArgumentParser(VisualizeArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    paths = make_pictures(args)
    for path in paths:
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    main()
