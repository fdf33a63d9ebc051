"""``python -m fer_mm.bench``: how fast fer-mm trains and infers, measured on the current device.

Six commands (CUDA if available, else CPU); the timing ones print markdown tables to record with
the command and the machine:

- ``models``: training-step throughput of every model on ready inputs (video ``[20, 98, 80]``,
  spectrogram ``[1, 128, 128]``): forward + backward + AdamW, samples/s (median of timed steps
  after warm-up), and peak memory (CUDA allocator peak per model; on CPU the process's peak RSS
  so far, which only grows from row to row).
- ``pipeline``: the full training path at CREMA-D's size with no preprocessing: an in-memory cache
  of random faces and waveforms (``--clips 7442 --actors 91``, the release's clip names, clip
  lengths drawn to match it: 1.3 to 5 s, mean about 2.5 s, at 30 fps), then a row per
  ``--precision`` and ``--batch`` (each printed as soon as it is measured): model-only samples/s
  (the network on ready inputs), data-path samples/s (resident batches and the model's input
  transforms: frame sampling, normalisation, audio crop, noise, spectrogram), end-to-end training
  samples/s (the system in a Lightning Trainer fed by the resident loader, over ``--steps`` (200)
  steps across epochs), evaluation samples/s (on the module's device: the end of a fit leaves it
  on the CPU), and from those one LOSO fold's time for the default recipe (15 epochs) and all
  folds' time run one after another. ``--channels-last`` and ``--compile`` prepare the network
  alike in the model-only and the end-to-end measurements.
- ``cache``: a finished preprocessing cache of the same random content, written to disk a chunk at
  a time, where ``python -m fer_mm.train data=crema_d data.root=ROOT data.cache_dir=DIR`` opens it
  without preprocessing (``--root ROOT --cache-dir DIR [--clips 7442 --actors 91 --seed 0]``).
- ``syncs``: the host-device syncs in the resident path's training and validation steps, counted
  in a short Lightning fit of AR5 (``--tasks``: with gender and age heads), with where each came
  from (see :mod:`fer_mm.bench.syncs`); on the CPU it stands in for a GPU run.
- ``latency``: inference on new clips of ``--seconds`` (2.5) in CREMA-D's own format (FLV, 480x360
  at 30 fps, AAC audio; rendered by the twin's renderer), one clip at a time as ``predict`` reads
  them: p50 and p95 in ms of decoding (frames and audio track), face tracking (the detector on
  every frame), features (box smoothing, crops, frame sampling, downmix, resampling, spectrogram)
  and the network under PyTorch and under ONNX Runtime; then features + model and the whole
  pipeline against the clip's length. ``--checkpoint`` times a trained model (default: an untrained
  AR5, which costs the same).
- ``detectors``: face detectors' recall and ms per frame on synthetic 640x480 frames (the twin's
  faces at several sizes, rolls, squeezes for yaw, occluded, dark, blurred, on clutter; see
  :mod:`fer_mm.bench.detectors`), or with ``--twin ROOT`` on a twin's own videos.

A face detector is spelled as in the config (``data.preprocess.detector`` and
``data.preprocess.detector_kwargs``): ``--detector yunet --detector-kwargs '{"downscale": 0.5}'``;
``detectors`` takes ``--detector`` again for each detector it compares, each followed by its own
``--detector-kwargs`` where it has any.
"""
