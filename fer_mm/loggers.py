"""Logger factories that need a decision at run time (W&B online or offline)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fer_mm.environment import failure_message, import_failure

log = logging.getLogger(__name__)


def wandb_configured() -> bool:
    """An API key in the environment or in ~/.netrc (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_logger(project: str, group: str, name: str, save_dir: str, tags: list[str] | None = None,
                 offline: bool | str = "auto", **kwargs):
    """W&B logger; ``offline: auto`` runs offline without an API key (sync later: ``wandb sync DIR``)."""
    from pytorch_lightning.loggers import WandbLogger

    error = import_failure("wandb")
    if error is not None:  # named with its fix, not as a traceback from deep inside the run
        raise SystemExit(failure_message("wandb", error))

    if offline == "auto":
        offline = not wandb_configured() or os.environ.get("WANDB_MODE") == "offline"
        if offline:
            log.info("W&B: no API key configured, logging offline under %s (upload later with `wandb sync`)", save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, group=group, name=name, save_dir=save_dir, tags=tags, offline=bool(offline),
                       **kwargs)
