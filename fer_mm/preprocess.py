"""``python -m fer_mm.preprocess data.root=DIR``: build (or resume) the preprocessing cache."""

from __future__ import annotations

from fer_mm.environment import require

if __name__ == "__main__":  # before the imports below: a broken dependency is named with its fix, not hidden
    require("preprocess")

import json
import logging

import hydra
from omegaconf import DictConfig

from fer_mm.data.cache import PreprocessError
from fer_mm.runs import register_resolvers

log = logging.getLogger("fer_mm.preprocess")
register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="preprocess")
def main(cfg: DictConfig) -> None:
    datamodule = hydra.utils.instantiate(cfg.data)
    try:
        cache = datamodule.prepare_data()
    except PreprocessError as err:  # a broken setup: its one message is the whole story, no traceback
        raise SystemExit(f"error: {err}") from None
    report = cache.report
    print(f"cache: {cache.path}")
    print(f"clips cached: {report['cached_clips']} from {report['actors']} actors, skipped: {report['skipped_count']}"
          f", frames without a face: {report['frames_without_face']}")
    print(f"per emotion: {json.dumps(report['clips_per_emotion'])}")
    print(f"report: {cache.path / 'preprocess_report.json'}")


if __name__ == "__main__":
    main()
