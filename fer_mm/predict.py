"""``python -m fer_mm.predict checkpoint=PATH input=PATH [output=DIR]``: the command of
:mod:`fer_mm.inference.predict`, a trained model on new videos, images and live sources."""

if __name__ == "__main__":
    from fer_mm.environment import require

    require("predict")  # before the command's imports: a broken dependency is named with its fix, not hidden

    from fer_mm.inference.predict import main

    main()
