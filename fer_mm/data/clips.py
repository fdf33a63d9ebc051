"""Cached clips -> the raw tensors a model's inputs start from: sampled face frames and a waveform.

The data side delivers, per clip, ``video``: T face frames, uint8 ``[T, H, W]`` (evenly spaced;
jittered within their segments in training) and ``audio``: the waveform as float in [-1, 1],
``[S]`` zero-padded (over-long clips centre-cropped) with ``audio_length``, the valid samples.
What the network then takes (normalisation, the spectrogram) belongs to the model side
(:class:`fer_mm.models.inputs.ModelInputs`), which states what it needs as a :class:`ClipSpec`.

Two ways to assemble batches, same contract and same values:
- :func:`clip_item` per clip (DataLoader workers, inference on a new video);
- :class:`ResidentClips`: the whole cache held once per process in device memory (or read in
  place from host memory), each batch gathered there with batched tensor ops: no worker processes.
"""

from __future__ import annotations

import gc
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from fer_mm.data.media.audio import int16_to_float
from fer_mm.data.cache import ClipCache
from fer_mm.data.media.video import sample_frame_indices
from fer_mm.vocab import AUDIO, VIDEO

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSpec:
    """What a model needs from each clip."""

    modalities: tuple[str, ...]
    frames: int  # T
    sample_rate: int
    max_audio_samples: int  # S

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))


def audio_window(n_samples: int, max_samples: int) -> tuple[int, int]:
    """(start, length) of the part of a clip's waveform that is used: centred when too long."""
    start = max(0, (n_samples - max_samples) // 2)
    return start, min(n_samples, max_samples)


def clip_item(faces: np.ndarray, pcm: np.ndarray, spec: ClipSpec, rng: np.random.Generator | None = None) -> dict:
    """One clip's raw tensors from all its face frames ``[N, H, W]`` uint8 and its int16 waveform.

    ``rng`` jitters the frames (training); without it the frames are the method's exact evenly
    spaced ones.
    """
    item = {}
    if VIDEO in spec.modalities:
        item[VIDEO] = torch.from_numpy(np.ascontiguousarray(faces[sample_frame_indices(len(faces), spec.frames, rng)]))
    if AUDIO in spec.modalities:
        start, n = audio_window(len(pcm), spec.max_audio_samples)
        wave = np.zeros(spec.max_audio_samples, np.float32)
        wave[:n] = int16_to_float(pcm[start : start + n])
        item[AUDIO], item["audio_length"] = torch.from_numpy(wave), n
    return item


def _fits(nbytes: int, device: torch.device, share: float = 0.5) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < share * free


class ResidentClips:
    """A cache's clips held once per process in memory, batches gathered with tensor ops.

    Args:
        cache: the preprocessing cache.
        spec: what the model needs (only its modalities are loaded).
        device: where batches are made.
        memory: ``device`` (the cache moves to the device), ``host`` (the cache stays in host
            memory, as its memory map; each batch is gathered there, pinned and copied to the
            device), or ``auto`` (device when the cache takes under half of the free device
            memory, else host).
    """

    def __init__(self, cache: ClipCache, spec: ClipSpec, device: torch.device | str = "cpu", memory: str = "auto",
                 targets: dict[str, np.ndarray] | None = None):
        # ``cache``: anything with ClipCache's ``clips``, ``frames`` and ``samples`` (the benchmark's is in memory)
        if memory not in ("auto", "device", "host"):
            raise ValueError(f"data.resident_memory={memory!r}: use auto, device or host")
        self.spec, self.device = spec, torch.device(device)
        arrays = {}
        if VIDEO in spec.modalities:
            arrays[VIDEO] = cache.frames
        if AUDIO in spec.modalities:
            arrays[AUDIO] = cache.samples
        nbytes = sum(a.nbytes for a in arrays.values())
        on_device = self.device.type == "cpu" or memory == "device" or (
            memory == "auto" and self.device.type == "cuda" and _fits(nbytes, self.device))
        self.store = self.device if on_device else torch.device("cpu")
        log.info("resident clips: %.2f GB of %s in %s memory", nbytes / 1e9, "+".join(arrays), self.store)
        self.arrays = {}
        for key, array in arrays.items():
            with warnings.catch_warnings():  # the map is read-only, and nothing here writes to it
                warnings.simplefilter("ignore", UserWarning)
                t = torch.from_numpy(array)
            # in host memory the memory map itself is used: no copy, and the page cache holds one copy
            # for all the processes on the machine; a device copy is made once per process
            self.arrays[key] = t.to(self.store)
        index = {col: torch.tensor(cache.clips[col].to_numpy(np.int64), device=self.store)
                 for col in ("video_offset", "n_frames", "audio_offset", "n_samples", "label")}
        self.video_offset, self.n_frames = index["video_offset"], index["n_frames"]
        self.audio_offset, self.n_samples = index["audio_offset"], index["n_samples"]
        self.labels = index["label"]
        # the other tasks' targets, by cache row (see fer_mm.data.targets)
        self.targets = {k: torch.from_numpy(np.asarray(v)).to(self.store) for k, v in (targets or {}).items()}

    def upload(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor in the store's memory; to a GPU from pinned memory, so the host does not wait."""
        if self.store.type == "cuda":
            return t.pin_memory().to(self.store, non_blocking=True)
        return t.to(self.store)

    def batch(self, rows: torch.Tensor, jitter: bool = False, generator: torch.Generator | None = None,
              uniform: torch.Tensor | None = None) -> dict:
        """The batch of cache rows ``rows``: the same keys, shapes, dtypes and values as
        :func:`clip_item` collated (``jitter``: the frames jittered, drawn from ``generator``).

        ``uniform``: the jitter's draws already made, ``[len(rows), frames]`` float64 in [0, 1) in
        the store's memory (what :class:`ResidentLoader` draws for a whole epoch); given, the frames
        are jittered with them and nothing is drawn or copied here.

        ``label`` and ``index`` are int64, as a DataLoader collates them."""
        rows = rows.to(self.store)
        out = dict(label=self.labels[rows], index=rows, **{k: v[rows] for k, v in self.targets.items()})
        spec = self.spec
        if VIDEO in spec.modalities:
            n = self.n_frames[rows][:, None]
            k = torch.arange(spec.frames, device=self.store)[None]
            if jitter and uniform is None:  # drawn on the CPU: the same draws wherever the cache lives
                uniform = torch.rand(len(rows), spec.frames, generator=generator, dtype=torch.float64).to(self.store)
            if uniform is not None:
                # frame k drawn uniformly from the k-th of T equal segments, as sample_frame_indices
                picks = torch.minimum(((k + uniform) * n / spec.frames).floor().long(), n - 1)
            else:  # np.linspace(0, n - 1, T).round(), the method's evenly spaced frames
                step = (n - 1).double() / max(spec.frames - 1, 1)
                picks = (k * step).round().long()
                if spec.frames > 1:
                    picks[:, -1] = n[:, 0] - 1  # linspace ends exactly on its stop
            index = (self.video_offset[rows][:, None] + picks).reshape(-1)
            frames = self.arrays[VIDEO].index_select(0, index)
            out[VIDEO] = frames.reshape(len(rows), spec.frames, *frames.shape[1:])
        if AUDIO in spec.modalities:
            total = self.n_samples[rows]
            start = ((total - spec.max_audio_samples) // 2).clamp(min=0)
            length = total.clamp(max=spec.max_audio_samples)
            s = torch.arange(spec.max_audio_samples, device=self.store)[None]
            valid = s < length[:, None]
            index = torch.where(valid, self.audio_offset[rows][:, None] + start[:, None] + s, 0)
            pcm = self.arrays[AUDIO][index.reshape(-1)].reshape(index.shape)
            out[AUDIO] = int16_to_float(pcm.float()) * valid
            out["audio_length"] = length
        if self.store != self.device:  # pinned, the copy to the device does not wait for it
            out = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in out.items()}
        return out


class SharedResidentClips:
    """The process's :class:`ResidentClips`: the folds of a sweep run in one process (Hydra's basic
    launcher) share one upload of the cache, each indexing it with its own rows.

    It holds one at a time: asked for another (another cache, model inputs, device or targets), it
    drops the one it holds and collects the garbage before loading the next, so an earlier one can
    never keep device memory from it (a finished fold's trainer, system and datamodule are reference
    cycles, freed only by the collector).
    """

    def __init__(self):
        self.key, self.clips, self.upload_seconds = None, None, 0.0

    def get(self, cache: ClipCache, spec: ClipSpec, device: torch.device | str, memory: str = "auto",
            targets: dict[str, np.ndarray] | None = None) -> ResidentClips:
        """The resident clips for these arguments, made (timed in ``upload_seconds``) only when they differ
        from the last call's; ``upload_seconds`` is 0 when the held ones serve."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" are one device
            device = torch.device("cuda", torch.cuda.current_device())
        # targets are facts of the clips (by cache row), the same for every fold of a config
        # (a cache rebuilt at the same path is another cache: its table's time tells them apart)
        path = getattr(cache, "path", None)
        where = (str(path), (path / "clips.csv").stat().st_mtime_ns) if path is not None else id(cache)
        key = (where, spec, str(device), memory, tuple(sorted(targets or {})))
        if key == self.key:
            self.upload_seconds = 0.0
            return self.clips
        self.release()
        t0 = time.perf_counter()
        self.clips = ResidentClips(cache, spec, device, memory, targets)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.key, self.upload_seconds = key, time.perf_counter() - t0
        return self.clips

    def release(self) -> None:
        """Drop the held clips and free what they and earlier folds' objects held."""
        self.key, self.clips = None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


SHARED_CLIPS = SharedResidentClips()


class ResidentLoader:
    """Batches of some rows of a :class:`ResidentClips`, in place of a DataLoader.

    Shuffles in training with its own CPU generator (seeded from torch's unless ``seed`` is given, so
    seeded runs repeat, wherever the cache lives); evaluation keeps the rows' order. Each training
    epoch's draws are made at its start on the host (the order, then every batch's frame jitter, in
    the order the batches would draw them one by one) and copied to the device once; the batches
    take their slices, so no step waits for a copy. Epoch ``e`` draws what epoch ``e`` of an
    uninterrupted run draws: Lightning calls :meth:`set_epoch` before each epoch, and an epoch
    asked out of turn (a run resumed from its last checkpoint) replays the draws before it from the
    seed. Without :meth:`set_epoch`, each pass draws the next epoch.

    ``weights`` (one per row, training only): each epoch draws ``len(rows)`` rows with replacement,
    each with probability proportional to its weight (datasets mixed in set shares), in place of a
    permutation.

    Under DDP each process trains on its share of each epoch's order (every process draws the same
    order: the datamodule gives them all rank 0's seed), padded as DistributedSampler pads, so all
    processes take the same number of steps; evaluation runs on all rows everywhere, which leaves
    the summed confusion's rates unchanged.
    """

    batch_sampler = None  # Lightning reads the sampler then, for its set_epoch

    def __init__(self, clips: ResidentClips, rows: np.ndarray, batch_size: int, train: bool, jitter: bool = True,
                 seed: int | None = None, weights: np.ndarray | None = None):
        self.clips, self.batch_size, self.train, self.jitter = clips, batch_size, train, jitter
        self.rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.seed = (int(torch.randint(2**62, (1,))) if seed is None else int(seed)) if train else None
        self.generator = torch.Generator().manual_seed(self.seed) if train else None
        self.epoch, self.drawn = 0, 0  # the epoch the next pass draws; the epochs the generator has drawn
        self.eval_rows = None if train else clips.upload(self.rows)

    @property
    def sampler(self) -> ResidentLoader:
        """Itself: Lightning's loops call ``loader.sampler.set_epoch(epoch)`` before each epoch."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (counted from 0) of this loader's seed."""
        self.epoch = int(epoch)

    def _shard(self) -> tuple[int, int]:
        """(rank, processes) of the training rows' split under DDP; (0, 1) otherwise."""
        if self.train and torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        _, processes = self._shard()
        return -(-(-(-len(self.rows) // processes)) // self.batch_size)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One epoch's draws, on the host: this process's rows in their order, and their frames'
        uniform jitter (None without jitter or video), drawn after the order as the batches drew it."""
        if self.weights is None:
            rows = self.rows[torch.randperm(len(self.rows), generator=self.generator)]
        else:
            rows = self.rows[torch.multinomial(self.weights, len(self.rows), replacement=True, generator=self.generator)]
        rank, processes = self._shard()
        padded = -(-len(rows) // processes) * processes
        rows = torch.cat([rows, rows[: padded - len(rows)]])[rank::processes]
        uniform = None
        if self.jitter and VIDEO in self.clips.spec.modalities:
            uniform = torch.rand(len(rows), self.clips.spec.frames, generator=self.generator, dtype=torch.float64)
        return rows, uniform

    def epoch_draws(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The draws of epoch :attr:`epoch` (replayed from the seed when asked out of turn), in the store."""
        if self.drawn != self.epoch:
            self.generator.manual_seed(self.seed)
            for _ in range(self.epoch):
                self.draw()
        rows, uniform = self.draw()
        self.epoch += 1
        self.drawn = self.epoch
        return self.clips.upload(rows), None if uniform is None else self.clips.upload(uniform)

    def __iter__(self):
        rows, uniform = self.epoch_draws() if self.train else (self.eval_rows, None)
        for i in range(0, len(rows), self.batch_size):
            part = slice(i, i + self.batch_size)
            yield self.clips.batch(rows[part], uniform=None if uniform is None else uniform[part])
