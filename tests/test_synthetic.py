import av
import numpy as np
import pytest
import soundfile as sf

from fer_mm.data.sources.crema_d import read_demographics
from fer_mm.data.twins.crema_d import generate


def test_twin_has_the_release_formats(twin_root):
    flvs = sorted((twin_root / "VideoFlash").glob("*.flv"))
    wavs = sorted((twin_root / "AudioWAV").glob("*.wav"))
    assert len(flvs) == len(wavs) == 64
    durations = []
    for flv, wav in zip(flvs[::7], wavs[::7]):
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        durations.append(info.duration)
        with av.open(str(flv)) as c:
            assert c.format.name == "flv"
            v = c.streams.video[0]
            assert "Sorenson" in v.codec_context.codec.long_name  # flv1 (ffprobe) / flv (libavcodec)
            assert (v.codec_context.width, v.codec_context.height) == (480, 360)
            assert float(v.average_rate) == 30
            assert len(c.streams.audio) == 1
            n_frames = sum(1 for _ in c.decode(video=0))
        assert abs(n_frames / 30 - info.duration) < 0.1
    assert 1.3 <= min(durations) and max(durations) <= 5.0
    assert len(read_demographics(twin_root / "VideoDemographics.csv")) == 4


@pytest.mark.slow  # in the slow job: the default suite stays under 10 minutes on 2 cores
def test_twin_is_deterministic_per_seed(tmp_path, twin_root):
    name = "1001_IEO_FEA_HI.wav"  # one actor's twins: a clip depends on its name and the seed only
    again = generate(tmp_path / "a", 1, 1, seed=0, workers=1, progress=False)
    other = generate(tmp_path / "b", 1, 1, seed=1, workers=1, progress=False)
    same = sf.read(again / "AudioWAV" / name)[0]
    assert np.array_equal(same, sf.read(twin_root / "AudioWAV" / name)[0])
    assert not np.array_equal(same[:1000], sf.read(other / "AudioWAV" / name)[0][:1000])
