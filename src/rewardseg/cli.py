"""The ``rewardseg`` command."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _cmd_train(ns) -> int:
    from .train import train

    train(ns.config, ns.work_dir, seed=ns.seed, resume=ns.resume, load_from=ns.load_from,
          launcher=ns.launcher, cfg_options=ns.cfg_options)
    return 0


def _cmd_class_weights(ns) -> int:
    from .class_weights import write_class_weights

    out = write_class_weights(ns.label_dir, ns.num_classes, ns.smoothing, out=ns.out,
                              suffix=ns.suffix, ignore_index=ns.ignore_index,
                              progress=not ns.quiet)
    with open(out) as fh:
        record = json.load(fh)
    print(f"wrote {out} (and .npy): {record['num_files']} label maps, weights "
          + ", ".join(f"{w:.4g}" for w in record["weights"]))
    return 0


def _cmd_env(ns) -> int:
    from .provenance import package_versions

    for name, version in package_versions().items():
        print(f"{name}: {version}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .train import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="rewardseg",
        description="Reward-optimisation fine-tuning for semantic segmentation.")
    parser.add_argument("--version", action="version", version=f"rewardseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train / fine-tune with an mmseg config")
    add_train_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("class-weights",
                       help="class weights 1/(n_c + s*N), rescaled to sum to C, "
                            "from a folder of label maps")
    p.add_argument("label_dir", help="folder searched recursively for label maps")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--smoothing", type=float, default=0.05,
                   help="s in 1/(n_c + s*N) (the report used 0.05 and 0.005)")
    p.add_argument("--out", default=None,
                   help="JSON to write (default: LABEL_DIR/class_weights_s<S>.json); "
                        "a .npy beside it")
    p.add_argument("--suffix", default="_labelTrainIds.png", help="label file suffix")
    p.add_argument("--ignore-index", type=int, default=255)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_class_weights)

    p = sub.add_parser("env", help="print the versions of the packages that matter")
    p.set_defaults(func=_cmd_env)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except (FileNotFoundError, ValueError, FileExistsError) as exc:
        print(f"rewardseg {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
