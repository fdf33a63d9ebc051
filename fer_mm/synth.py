"""``python -m fer_mm.synth [OUT_DIR] [--actors N] [--sentences N] [--seed S] [--difficulty D]``:
write the synthetic twin and print its Bayes ceilings.

OUT_DIR defaults to the folder ``data=synthetic`` uses for the same parameters
(``datasets/crema_d_twin/<actors>x<sentences>_<difficulty>_seed<seed>``), so a twin made here
is the one training finds. ``--ceilings-only`` prints the ceilings without writing clips. The
ceilings are the best accuracy a model can expect from what each modality displays, knowing
each clip's actor and sentence (see fer_mm/data/displays.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fer_mm.data.displays import DIFFICULTY_PRESETS, ceiling_key
from fer_mm.data.synthetic import generate, twin_spec
from fer_mm.runs import register_resolvers
from fer_mm.vocab import AUDIO, MODALITIES, VIDEO


def _difficulty(text: str):
    """``published`` / ``human`` / ``none``, or ``audio=0.5,video=0.55``."""
    if "=" not in text:
        return text
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--difficulty {text!r}: write audio=W,video=W") from None


def default_root(actors: int, sentences: int, seed: int, difficulty) -> Path:
    """The folder ``data=synthetic`` reads for these parameters (``data.root`` of the composed config)."""
    from hydra import compose, initialize

    register_resolvers()
    if not isinstance(difficulty, str):
        difficulty = "{" + ",".join(f"{m}:{w}" for m, w in difficulty.items()) + "}"
    overrides = ["data=synthetic", f"data.synthetic.actors={actors}", f"data.synthetic.sentences={sentences}",
                 f"data.synthetic.seed={seed}", f"data.synthetic.difficulty={difficulty}"]
    with initialize(version_base="1.3", config_path="../conf"):
        return Path(compose("preprocess", overrides=overrides).data.root)


def describe(spec: dict) -> str:
    c = spec["ceilings"]
    weights = ", ".join(f"{m} {w:g}" for m, w in spec["difficulty"].items())
    rows = [(f"{AUDIO} only", c[ceiling_key([AUDIO])]), (f"{VIDEO} only", c[ceiling_key([VIDEO])]),
            ("both", c[ceiling_key(MODALITIES)])]
    return "\n".join([f"difficulty {spec['difficulty_preset']} ({weights}); Bayes ceilings on {spec['clips']} clips "
                      f"(the best accuracy a model can expect):"]
                     + [f"  {name:<11} {100 * value:6.2f}%" for name, value in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_mm.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", type=Path, default=None,
                        help="folder to write VideoFlash/, AudioWAV/, VideoDemographics.csv, SYNTHETIC.json and "
                             "displays.csv into")
    parser.add_argument("--actors", type=int, default=12, help="first N of the 91 actors (default 12)")
    parser.add_argument("--sentences", type=int, default=4, help="first N of the 12 sentences, IEO first (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", type=_difficulty, default="published",
                        help=f"{', '.join(DIFFICULTY_PRESETS)} or audio=W,video=W (default published)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    parser.add_argument("--ceilings-only", action="store_true", help="print the ceilings, write nothing")
    args = parser.parse_args(argv)
    try:
        spec = twin_spec(args.actors, args.sentences, args.seed, args.difficulty)
    except ValueError as err:
        parser.error(str(err))
    if not args.ceilings_only:
        out = args.out_dir or default_root(args.actors, args.sentences, args.seed, args.difficulty)
        t0 = time.time()
        try:
            generate(out, args.actors, args.sentences, args.seed, args.workers, difficulty=args.difficulty)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        print(f"wrote {spec['clips']} clips of {args.actors} actors to {out} in {time.time() - t0:.0f} s")
    print(describe(spec))


if __name__ == "__main__":
    main()
