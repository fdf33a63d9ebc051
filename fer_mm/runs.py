"""Run identity: which config a run folder holds (and the timed checkpoint writing a run records).

A run is identified by what shaped its result: experiment, protocol, fold, and a short hash of
the resolved config's result-relevant keys (:func:`config_hash`). The folder layout is
``experiments/<experiment>/<protocol>/<hash>/fold_<k>/``, so a changed config never reuses or
resumes another config's results, and a sweep over hyperparameters x folds gives one folder
per config x fold. Keys that only say where things go or how the run reports itself are left
out of the hash (:data:`IGNORED_KEYS`): logging, progress, paths, worker counts, ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, ListConfig, OmegaConf

from fer_mm.data.sources.folders import folder_layout
from fer_mm.data.twins.spec import twin_dirname  # its naming only: the generator stays unloaded

HASH_LENGTH = 8
# dotted keys; a ``*`` matches any one key
IGNORED_KEYS = (
    "hydra", "paths", "logger", "overwrite", "task_name",
    "folds_together",  # how folds are scheduled (its record says with which folds each trained), as a launcher's jobs
    "cv.fold", "data.fold",  # the fold is a level of the layout of its own
    "data.cache_dir", "data.num_workers", "data.preprocess_workers", "data.progress", "data.resident_memory",
    "trainer.default_root_dir", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "trainer.callbacks",  # a trainer config's display callbacks (progress bar)
    "callbacks.*.dirpath", "callbacks.last_checkpoint.every_n_epochs",  # how often last.ckpt is written
)
# what a data config declares its samples are (frames, sample_rate, audio, num_classes): the model
# copies what it takes (model.inputs, model.net.num_classes), and the copies are what is hashed, so a
# setting is hashed once, where it shapes the model, and the declaration adds no key of its own
DECLARED_KEYS = ("data.samples",)
# a value interpolating one of these says where this run's outputs go, never what they are
OUTPUT_REFERENCES = ("paths.output_dir", "hydra:")
FOLD = "${cv.fold}"
ALIAS = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


def _drop(node: Any, parts: list[str]) -> None:
    if not isinstance(node, dict) or not parts:
        return
    head, rest = parts[0], parts[1:]
    for key in list(node) if head == "*" else [head]:
        if key in node:
            if rest:
                _drop(node[key], rest)
            else:
                del node[key]


def _drop_output_references(node: Any) -> None:
    """Drop values naming this run's own output places; a value that names the fold inside a
    longer one (stage one's ``.../fold_${cv.fold}/checkpoints/best.ckpt``) keeps ``<fold>`` instead,
    so all folds of a config share its hash."""
    items = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
    for key, value in reversed(items):
        if isinstance(value, str) and "${" in value:
            if any(ref in value for ref in OUTPUT_REFERENCES):
                del node[key]
            elif FOLD in value and value != FOLD:
                node[key] = value.replace(FOLD, "<fold>")
        else:
            _drop_output_references(value)


def _aliases(node: Any, prefix: str = "") -> dict[str, str]:
    """Keys whose value is exactly another key (``protocol: ${cv.protocol}``) -> that key."""
    out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            match = ALIAS.fullmatch(value) if isinstance(value, str) else None
            if match:
                out[f"{prefix}{key}"] = match.group(1)
            else:
                out.update(_aliases(value, f"{prefix}{key}."))
    return out


def _alias_chain(key: str, aliases: dict[str, str]) -> list[str]:
    """The keys ``key`` repeats, nearest first: ``model.inputs.sample_rate`` -> ``data.samples.sample_rate``
    -> ``data.preprocess.sample_rate``."""
    chain = [aliases[key]]
    while chain[-1] in aliases and aliases[chain[-1]] not in chain:
        chain.append(aliases[chain[-1]])
    return chain


def _has(node: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _relative_to(node: Any, root: str) -> Any:
    if isinstance(node, dict):
        return {k: _relative_to(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_relative_to(v, root) for v in node]
    if isinstance(node, str) and (node == root or node.startswith(root + "/")):
        return "<paths.root_dir>" + node[len(root):]  # a marker, not an interpolation
    return node


def result_config(cfg: DictConfig | dict) -> dict:
    """The resolved config without the keys that cannot change a result.

    A key that only repeats another (``data.protocol: ${cv.protocol}``), directly or through keys
    that repeat others, is left out where one of them is kept, so each setting is hashed, and named
    in a report, once. The data's declared ``samples`` are left out (:data:`DECLARED_KEYS`): the
    model's copies of them are hashed. Paths under the project
    root (``paths.root_dir``, set by ``FER_MM_ROOT``) are kept relative to it, so the default twin's
    runs keep their hash when the project moves.
    """
    raw = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    raw.pop("hydra", None)
    _drop_output_references(raw)
    aliases = _aliases(raw)
    resolved = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    root = (resolved.get("paths") or {}).get("root_dir")
    if root:
        resolved = _relative_to(resolved, str(root).rstrip("/"))
    for key in (*IGNORED_KEYS, *DECLARED_KEYS):
        _drop(resolved, key.split("."))
    for key in aliases:
        if any(_has(resolved, target) for target in _alias_chain(key, aliases)):
            _drop(resolved, key.split("."))
    return resolved


def config_hash(cfg: DictConfig | dict) -> str:
    """A short, stable hash of :func:`result_config` (key order and number spelling do not matter)."""
    text = json.dumps(result_config(cfg), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:HASH_LENGTH]


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_keys(configs: list[dict]) -> list[str]:
    """The dotted keys whose values are not the same in all ``configs``."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat))
    return [k for k in keys if len({json.dumps(f.get(k, "<absent>"), sort_keys=True, default=str) for f in flat}) > 1]


def _run_id_resolver(*, _root_: DictConfig) -> str:
    return config_hash(_root_)


def _twin_dir_resolver(synthetic: DictConfig) -> str:
    return twin_dirname(OmegaConf.to_container(synthetic, resolve=True))


def _class_count_resolver(root: str, classes: ListConfig | None) -> int:
    """The classes of a folder per class: those listed, else the class folders it holds (as its cache reads them)."""
    return len(classes) if classes else len(folder_layout(root)[1])


def register_resolvers() -> None:
    """``${run_id:}`` in the Hydra run and sweep folders (conf/hydra/default.yaml),
    ``${twin_dir:${data.synthetic}}`` in the twin's data root (conf/data/synthetic.yaml), and
    ``${class_count:${data.root},${data.preprocess.classes}}``, the classes of an image folder
    (conf/data/image_folder.yaml)."""
    for name, resolver in (("run_id", _run_id_resolver), ("twin_dir", _twin_dir_resolver),
                           ("class_count", _class_count_resolver)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


class TimedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writing, timed: ``seconds`` sums the time spent saving."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        t0 = time.perf_counter()
        super().save_checkpoint(checkpoint, path, storage_options)
        self.seconds += time.perf_counter() - t0
