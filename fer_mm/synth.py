"""``python -m fer_mm.synth OUT_DIR [--actors N] [--sentences N] [--seed S]``: write the synthetic twin."""

from __future__ import annotations

import argparse

from fer_mm.data.synthetic import generate, twin_names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_mm.synth", description=__doc__)
    parser.add_argument("out_dir", help="folder to write VideoFlash/, AudioWAV/ and VideoDemographics.csv into")
    parser.add_argument("--actors", type=int, default=12, help="first N of the 91 actors (default 12)")
    parser.add_argument("--sentences", type=int, default=4, help="first N of the 12 sentences, IEO first (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    args = parser.parse_args(argv)
    try:
        n = len(twin_names(args.actors, args.sentences))
    except ValueError as err:
        parser.error(str(err))
    out = generate(args.out_dir, args.actors, args.sentences, args.seed, args.workers)
    print(f"wrote {n} clips of {args.actors} actors to {out}")


if __name__ == "__main__":
    main()
