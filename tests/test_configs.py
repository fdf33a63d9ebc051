"""Configs that compose on their own: every data config with every model config, the data's declared
samples as the model's inputs, the pairs refused before any work, and the experiments' run identity.
Composition only: no data is prepared and no weights are initialised."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch

from fer_mm.models.inputs import ModelInputs
from fer_mm.runs import config_hash, result_config
from fer_mm.train import check_data_holds_model_inputs, train

CONF = Path(__file__).resolve().parents[1] / "conf"
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if not p.stem.startswith("_"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("_"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# the pairs refused before any work: AR5 reads audio by default, and the face image sets hold none
REFUSED = {(d, m) for d in ("ckplus", "fer2013", "image_folder", "utkface", "imdb_wiki", "faces_mixed")
           for m in ("ar5", "logmel_cnn", "late_fusion", "cross_attention")}
# data without emotion labels: a model is refused unless it learns another task (model.tasks)
NO_EMOTION = ("utkface", "imdb_wiki")
FOLDER_CLASSES = ("angry", "happy", "sad")

# config_hash of each experiment as `python -m fer_mm.train experiment=NAME` composes it, recorded at
# 78a6d9e, before the data configs declared their samples. The CREMA-D experiments' run folders and
# results are found by these: they never change.
CREMA_D_HASHES = {
    "ar1_video": "b469875b", "ar2_video": "9f57e033", "ar3_video": "c656d1ca", "ar4_video": "bbb31eb2",
    "ar5_audio_only": "fd33a4e0", "ar5_fusion": "59c410b8", "ar5_fusion_multitask": "1dce0bdd",
    "ar5_video_only": "7512ee93", "inception_resnet_v2_video": "d828928f", "inception_v4_video": "5f23b51e",
    "resnet18_video": "dfb60121",
}
# The image experiments' hashes changed once, with that change, and only by model.inputs.sample_rate:
# their configs pasted 16000 for a model that reads no audio; their inputs now copy their data's null.
# Before: ckplus_au 426c7e3c, ckplus_resnet50 00b81fbf, fer2013_mini_xception 1af53c6a.
IMAGE_HASHES = {"ckplus_au": "9a5913d9", "ckplus_resnet50": "f1572dc0", "fer2013_mini_xception": "ad25b1e9"}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """A folder per class (empty: no data is read), for data=image_folder."""
    root = tmp_path_factory.mktemp("faces")
    for name in FOLDER_CLASSES:
        (root / name).mkdir()
    return root


def _roots(data: str, image_folder: Path) -> list[str]:
    """The one setting some data configs cannot do without: where the data is (never read here)."""
    return {"crema_d": ["data.root=/nonexistent/CREMA-D"], "image_folder": [f"data.root={image_folder}"]}.get(data, [])


def _build(cfg):
    """The system (on the meta device: its whole constructor, no weights) and the datamodule, as training
    makes them, with the checks that need no data."""
    check_data_holds_model_inputs(cfg)
    with torch.device("meta"):
        system = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data, clip_spec=system.inputs.clip_spec, targets=system.targets)
    datamodule.check_clip_spec()
    return system, datamodule


@pytest.mark.parametrize("data, model", [(d, m) for d in DATA for m in MODELS])
def test_every_data_and_model_pair_composes_or_is_refused(data, model, image_folder, make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, [f"data={data}", f"model={model}", *_roots(data, image_folder)])
    if (data, model) in REFUSED:
        fix = "a model that reads video" if model == "logmel_cnn" else r"model.net.modalities=\[video\]"
        expected = rf"model={model} reads audio, which data={data} does not hold \(data.samples.audio=false\): " \
                   rf"use {fix}"
        with pytest.raises(ValueError, match=expected):
            train(cfg)
        assert not any(tmp_path.iterdir())  # refused before its run folder is claimed
        return
    if data in NO_EMOTION:
        with pytest.raises(Exception, match="model.net.num_classes=0 builds no emotion classifier: give the model "
                                            "another task"):
            _build(cfg)
        cfg = make_cfg(tmp_path, [f"data={data}", f"model={model}", "+model.tasks.age.weight=1"])
    system, datamodule = _build(cfg)
    assert system.num_classes == len(datamodule.class_names) == cfg.data.samples.num_classes
    assert system.inputs.frames == cfg.data.samples.frames == (20 if cfg.data.samples.audio else 1)


def test_the_named_fix_makes_a_refused_pair_compose(image_folder, make_cfg, tmp_path):
    system, datamodule = _build(make_cfg(tmp_path, ["data=fer2013", "model=ar5", "model.net.modalities=[video]"]))
    assert system.modalities == ("video",) and system.num_classes == 7


def test_an_image_folder_has_as_many_classes_as_class_folders(image_folder, make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, ["data=image_folder", "model=mini_xception", f"data.root={image_folder}"])
    assert cfg.model.net.num_classes == len(FOLDER_CLASSES)
    listed = make_cfg(tmp_path, ["data=image_folder", "model=mini_xception", f"data.root={image_folder}",
                                 "data.preprocess.classes=[sad,happy]"])
    assert listed.model.net.num_classes == 2


@pytest.mark.parametrize("overrides, message", [
    (["data=fer2013", "data.samples.num_classes=5"], "data.samples.num_classes=5, but the cache of this data holds "
                                                     "num_classes=7"),
    (["data.samples.sample_rate=8000"], "data.samples.sample_rate=8000, but the cache of this data holds "
                                        "sample_rate=16000"),
    (["data=ckplus", "data.samples.frames=20"], "data.samples.frames=20, but the cache of this data holds frames=1"),
    (["+data.samples.colour=1"], "data.samples.colour is not a setting"),
])
def test_a_declaration_the_cache_contradicts_is_refused(overrides, message, make_cfg, tmp_path):
    with pytest.raises(Exception, match=message):  # Hydra's instantiate wraps the ValueError
        _build(make_cfg(tmp_path, ["model=ar1", *overrides]))


def test_model_inputs_take_no_sample_rate_only_without_audio():
    assert ModelInputs(["video"], frames=1, sample_rate=None).clip_spec.sample_rate == 16_000  # its clip window's rate
    with pytest.raises(ValueError, match="model.inputs.sample_rate is null .*model.net.modalities=\\[video\\]"):
        ModelInputs(["video", "audio"], sample_rate=None)


# The face-attribute experiments (gender and age from UTKFace and IMDB-WIKI, and with FER2013's emotion),
# recorded when they were added.
FACE_HASHES = {"faces_multitask": "3b3eb125", "imdb_wiki_gender_age": "cb1d5281", "utkface_age": "74269e0b",
               "utkface_gender": "8491e720"}


# The models beyond AR5 (frames as time, log-mel CNN, late fusion, cross-modal attention), recorded when
# they were added.
FUSION_HASHES = {"cross_attention_fusion": "b1296a8c", "frame_resnet_video": "ef7bedfc", "late_fusion": "64cdad67",
                 "logmel_audio": "15f8254c"}
ALL_HASHES = {**CREMA_D_HASHES, **IMAGE_HASHES, **FACE_HASHES, **FUSION_HASHES}


def test_every_experiment_has_a_recorded_hash():
    assert sorted(ALL_HASHES) == EXPERIMENTS


@pytest.mark.parametrize("experiment, expected", sorted(ALL_HASHES.items()))
def test_experiment_config_hashes_are_as_recorded(experiment, expected, make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, [f"experiment={experiment}"])
    assert config_hash(cfg) == expected
    hashed = result_config(cfg)  # the model's copies of the declared samples are hashed, the declaration not
    assert "samples" not in hashed["data"] and hashed["model"]["inputs"]["frames"] == cfg.data.samples.frames


def test_gpu_display_and_checkpoint_cadence_keys_leave_the_hash(make_cfg, tmp_path):
    """trainer=gpu's progress bar (its own trainer.callbacks) is made into the run's callbacks, and how
    it or last.ckpt is paced changes no result, so no hash; cudnn's benchmark may, so it is hashed."""
    import pytorch_lightning as pl

    from fer_mm.train import run_callbacks

    gpu = make_cfg(tmp_path, ["experiment=ar5_fusion", "trainer=gpu"])
    assert gpu.trainer.benchmark is True and "callbacks" not in result_config(gpu)["trainer"]
    paced = make_cfg(tmp_path, ["experiment=ar5_fusion", "trainer=gpu", "trainer.callbacks=[]",
                                "callbacks.last_checkpoint.every_n_epochs=2"])
    unbenched = make_cfg(tmp_path, ["experiment=ar5_fusion", "trainer=gpu", "trainer.benchmark=false"])
    assert config_hash(paced) == config_hash(gpu) != config_hash(unbenched)
    bars = [c for c in run_callbacks(gpu) if isinstance(c, pl.callbacks.ProgressBar)]
    assert [(type(b).__name__, b.refresh_rate) for b in bars] == [("TQDMProgressBar", 50)]
    last = [c for c in run_callbacks(gpu) if isinstance(c, pl.callbacks.ModelCheckpoint) and c.filename == "last"]
    assert [c._every_n_epochs for c in last] == [1]
    quiet = make_cfg(tmp_path, ["experiment=ar5_fusion", "trainer=gpu", "trainer.enable_progress_bar=false"])
    assert not any(isinstance(c, pl.callbacks.ProgressBar) for c in run_callbacks(quiet))  # Lightning refuses one
