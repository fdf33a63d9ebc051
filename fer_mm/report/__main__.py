"""``python -m fer_mm.report``: see :mod:`fer_mm.report`."""

from fer_mm.report.build import main

if __name__ == "__main__":
    main()
