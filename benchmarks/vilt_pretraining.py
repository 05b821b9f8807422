"""Does ViLT pretraining work? Pretrained vs from scratch in the low-label regime, ITM, word-patch pointing and the
paper's ablations on the synthetic scenes, on the CPU (`detrvilt.training.vilt.pretraining_study`; tables and
commands in docs/vilt_pretraining.md).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/vilt_pretraining.py --output_dir outputs/vilt_pretraining

Results are written to OUTPUT_DIR/results.json after every run; starting the command again resumes where it stopped.
`--tables_only` rewrites OUTPUT_DIR/tables.md from the results.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # synthetic data and new models only: nothing needs the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from transformers import HfArgumentParser  # noqa: E402

from detrvilt.training.vilt.pretraining_study import PretrainingStudyArguments, run_study  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(PretrainingStudyArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return run_study(args)


if __name__ == "__main__":
    main()
