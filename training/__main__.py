"""`python -m training CONFIG --base-path DIR [--set k=v ...] [--resume]`; also the torchrun entry point:
`torchrun --nproc_per_node N -m training CONFIG --base-path DIR`. Registering the result in the model store
is `servekit train`'s job, since this package never imports `serving`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from training.config import load_config
from training.pipeline import run, summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("--base-path", type=Path, required=True, help="Local HF directory of the base model.")
    parser.add_argument("--base-tag", help="Name recorded as the base (default: the config's base_model).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="Continue from the newest checkpoint.")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    manifest = run(config, args.base_path, args.base_tag or config.base_model, resume=args.resume)
    if manifest is not None:
        Console().print(summary(manifest))


if __name__ == "__main__":
    main()
