"""``python -m fer_mm.synth [OUT_DIR] [--actors N] [--sentences N] [--seed S] [--difficulty D]``:
write the synthetic twin and print its Bayes ceilings.

OUT_DIR defaults to the folder ``data=synthetic`` uses for the same parameters
(``datasets/crema_d_twin/<actors>x<sentences>_<difficulty>_seed<seed>``), so a twin made here
is the one training finds. ``--ceilings-only`` prints the ceilings without writing clips. The
ceilings are the best accuracy a model can expect from what each modality displays, knowing
each clip's actor and sentence (see fer_mm/data/twins/displays.py).

``--dataset fer2013`` or ``--dataset ckplus`` writes a twin of that image set instead
(fer_mm/data/twins/images.py), by default to the folder ``data=fer2013`` / ``data=ckplus`` read for
the same parameters (``datasets/fer2013_twin/120x25_d0.3_seed0``, ``datasets/ckplus_twin/24_seed0``);
``--subjects N`` sets its size, and for FER2013
``--difficulty`` is the share of images that display another class than their label (default 0.3).

``--dataset utkface`` or ``--dataset imdb_wiki`` writes that twin (faces with gender and age cues,
fer_mm/data/twins/attributes.py and imdb_wiki.py) with the parameters of ``data=utkface`` /
``data=imdb_wiki`` (``data.synthetic``), to the folder those configs read, and prints its ceilings:
the gender accuracy and the age MAE of reading the faces' displays exactly, beside the input-blind
baselines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fer_mm.data.twins.displays import DIFFICULTY_PRESETS, ceiling_key
from fer_mm.data.twins.images import ckplus_spec, fer2013_spec, generate_ckplus, generate_fer2013
from fer_mm.data.images import generate_twin, twin_folder
from fer_mm.data.twins.spec import read_spec
from fer_mm.data.twins.crema_d import generate
from fer_mm.data.twins.spec import twin_spec
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


def data_dir() -> Path:
    """The data folder (``paths.data_dir`` of the composed config), where the image twins go by default."""
    from hydra import compose, initialize

    register_resolvers()
    with initialize(version_base="1.3", config_path="../conf"):
        return Path(compose("preprocess").paths.data_dir)


IMAGE_TWINS = {"fer2013": ("fer2013_twin", 120), "ckplus": ("ckplus_twin", 24)}  # default folder, subjects


def describe(spec: dict) -> str:
    c = spec["ceilings"]
    weights = ", ".join(f"{m} {w:g}" for m, w in spec["difficulty"].items())
    rows = [(f"{AUDIO} only", c[ceiling_key([AUDIO])]), (f"{VIDEO} only", c[ceiling_key([VIDEO])]),
            ("both", c[ceiling_key(MODALITIES)])]
    return "\n".join([f"difficulty {spec['difficulty_preset']} ({weights}); Bayes ceilings on {spec['clips']} clips "
                      f"(the best accuracy a model can expect):"]
                     + [f"  {name:<11} {100 * value:6.2f}%" for name, value in rows])


def describe_fer2013(spec: dict) -> str:
    return (f"difficulty {spec['difficulty']:g} (images displaying another class than their label); Bayes ceiling "
            f"{100 * spec['ceiling']:.2f}% on all images, {100 * spec['ceilings']['PrivateTest']:.2f}% on PrivateTest "
            f"(the best accuracy a model can expect)")


def _image_twin(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The FER2013 or CK+ twin: checked, written unless ``--ceilings-only``, and described."""
    folder, subjects = IMAGE_TWINS[args.dataset]
    subjects = subjects if args.subjects is None else args.subjects
    try:
        if args.dataset == "fer2013":
            try:
                difficulty = 0.3 if args.difficulty is None else float(args.difficulty)
            except (TypeError, ValueError):
                parser.error(f"--dataset fer2013 --difficulty {args.difficulty}: give a share in [0, 1], e.g. 0.3")
            spec = fer2013_spec(subjects, seed=args.seed, difficulty=difficulty)
        else:
            if args.ceilings_only or args.difficulty is not None:
                parser.error("--ceilings-only and --difficulty are for crema_d and fer2013: CK+ has no difficulty")
            spec = ckplus_spec(subjects, seed=args.seed)
    except ValueError as err:
        parser.error(f"--dataset {args.dataset}: {err}")
    if not args.ceilings_only:
        params = dict(subjects=subjects, seed=args.seed)
        if args.dataset == "fer2013":
            params.update(images_per_subject=spec["images_per_subject"], difficulty=spec["difficulty"])
        out = args.out_dir or data_dir() / folder / twin_folder(args.dataset, params)  # where data=<dataset> looks
        t0 = time.time()
        try:
            if args.dataset == "fer2013":
                generate_fer2013(out, subjects, seed=args.seed, difficulty=spec["difficulty"], workers=args.workers)
            else:
                generate_ckplus(out, subjects, seed=args.seed, workers=args.workers)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        if args.dataset == "fer2013":
            parts = ", ".join(f"{usage} {n}" for usage, n in spec["images"].items())
            print(f"wrote {sum(spec['images'].values())} images of {subjects} subjects ({parts}) to {out} "
                  f"in {time.time() - t0:.0f} s")
        else:
            print(f"wrote {spec['sequences']} sequences ({spec['labelled_sequences']} labelled, {spec['frames']} frames) "
                  f"of {subjects} subjects to {out} in {time.time() - t0:.0f} s")
    if args.dataset == "fer2013":
        print(describe_fer2013(spec))


ATTRIBUTE_TWINS = ("utkface", "imdb_wiki")
# what SYNTHETIC.json says a model can reach (reading the displays exactly) and what ignoring the face scores
TWIN_FIGURES = ("gender_ceiling", "majority_gender_accuracy", "age_mae_floor", "mean_age_mae", "median_age_mae")


def _attribute_twin(args: argparse.Namespace) -> None:
    """The UTKFace or IMDB-WIKI twin of its data config's parameters, written and described."""
    from hydra import compose, initialize

    register_resolvers()
    with initialize(version_base="1.3", config_path="../conf"):
        data = compose("preprocess", overrides=[f"data={args.dataset}"]).data
    synthetic = dict(data.synthetic, seed=args.seed)
    out = args.out_dir or Path(data.twin_dir) / twin_folder(args.dataset, synthetic)
    t0 = time.time()
    try:
        generate_twin(args.dataset, out, synthetic, workers=args.workers)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    spec = read_spec(out)
    print(f"wrote the {args.dataset} twin ({', '.join(f'{k} {v}' for k, v in synthetic.items())}) to {out} in "
          f"{time.time() - t0:.0f} s\n{json.dumps({k: spec[k] for k in TWIN_FIGURES}, indent=2)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_mm.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", type=Path, default=None,
                        help="folder to write the twin into (crema_d: VideoFlash/, AudioWAV/, VideoDemographics.csv, "
                             "SYNTHETIC.json and displays.csv); default: under the data folder, see above")
    parser.add_argument("--dataset", choices=("crema_d", *IMAGE_TWINS, *ATTRIBUTE_TWINS), default="crema_d",
                        help="which set to twin (default crema_d)")
    parser.add_argument("--actors", type=int, default=None, help="crema_d: first N of the 91 actors (default 12)")
    parser.add_argument("--sentences", type=int, default=None,
                        help="crema_d: first N of the 12 sentences, IEO first (default 4)")
    parser.add_argument("--subjects", type=int, default=None,
                        help="fer2013, ckplus: synthetic subjects (default 120 for fer2013, 24 for ckplus)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", type=_difficulty, default=None,
                        help=f"crema_d: {', '.join(DIFFICULTY_PRESETS)} or audio=W,video=W (default published); "
                             f"fer2013: the share of images displaying another class, 0..1 (default 0.3)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    parser.add_argument("--ceilings-only", action="store_true", help="print the ceilings, write nothing")
    args = parser.parse_args(argv)
    if args.dataset in ATTRIBUTE_TWINS:
        if any(v is not None for v in (args.actors, args.sentences, args.subjects, args.difficulty)) or \
                args.ceilings_only:
            parser.error(f"--dataset {args.dataset} takes its size from data={args.dataset}'s data.synthetic (and "
                         f"--seed, --workers); set others in conf/data/{args.dataset}.yaml")
        _attribute_twin(args)
        return
    if args.dataset != "crema_d":
        if args.actors is not None or args.sentences is not None:
            parser.error(f"--actors and --sentences are for crema_d; --dataset {args.dataset} takes --subjects")
        _image_twin(parser, args)
        return
    if args.subjects is not None:
        parser.error("--subjects is for fer2013 and ckplus; crema_d takes --actors and --sentences")
    args.actors = 12 if args.actors is None else args.actors
    args.sentences = 4 if args.sentences is None else args.sentences
    args.difficulty = "published" if args.difficulty is None else args.difficulty
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
