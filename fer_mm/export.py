"""``python -m fer_mm.export checkpoint=PATH format=onnx output=model.onnx``: the command of
:mod:`fer_mm.inference.export`, a trained network as ONNX."""

if __name__ == "__main__":
    from fer_mm.environment import require

    require("export")  # before the command's imports: a broken dependency is named with its fix, not hidden

    from fer_mm.inference.export import main

    main()
