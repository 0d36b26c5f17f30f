"""Tests for omni_tf.data.audio: decode, probe (full/header), checks."""

import numpy as np
import pytest
import soundfile as sf

from omni_tf.data import audio


def _write(path, n=8000, rate=16000, channels=1, seed=0):
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (n, channels)).astype(np.float32)
    sf.write(str(path), x if channels > 1 else x[:, 0], rate, format="FLAC", subtype="PCM_16")
    return x


def test_decode_round_trip_pcm16(tmp_path):
    x = _write(tmp_path / "a.flac")
    y = audio.decode(str(tmp_path / "a.flac"), 16000)
    assert y.dtype == np.float32 and y.shape == (8000,)
    np.testing.assert_allclose(y, x[:, 0], atol=1 / 32768 + 1e-7)


@pytest.mark.parametrize("check", ["full", "header"])
def test_probe_good_file(tmp_path, check):
    _write(tmp_path / "a.flac", n=12345)
    info = audio.probe(str(tmp_path / "a.flac"), check)
    assert info == audio.AudioInfo(12345, 16000, 1)
    assert info.duration_s == pytest.approx(12345 / 16000)


@pytest.mark.parametrize("check", ["full", "header"])
def test_probe_truncated_flac_is_corrupt(tmp_path, check):
    _write(tmp_path / "a.flac", n=48000)
    data = (tmp_path / "a.flac").read_bytes()
    (tmp_path / "t.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(audio.AudioError) as e:
        audio.probe(str(tmp_path / "t.flac"), check)
    assert e.value.kind == audio.CORRUPT and e.value.path.endswith("t.flac")


def test_probe_garbage_and_empty(tmp_path):
    (tmp_path / "g.flac").write_bytes(np.random.default_rng(0).bytes(2000))
    (tmp_path / "e.flac").write_bytes(b"")
    with pytest.raises(audio.AudioError) as e:
        audio.probe(str(tmp_path / "g.flac"))
    assert e.value.kind == audio.CORRUPT
    with pytest.raises(audio.AudioError) as e:
        audio.probe(str(tmp_path / "e.flac"))
    assert e.value.kind == audio.EMPTY_FILE
    with pytest.raises(audio.AudioError) as e:
        audio.decode(str(tmp_path / "g.flac"))
    assert e.value.kind == audio.CORRUPT


def test_check_info_kinds():
    audio.check_info("x", audio.AudioInfo(4000, 16000, 1), 16000, 3600)
    cases = [(audio.AudioInfo(4000, 8000, 1), audio.SAMPLE_RATE),
             (audio.AudioInfo(4000, 16000, 2), audio.CHANNELS),
             (audio.AudioInfo(3599, 16000, 1), audio.TOO_SHORT)]
    for info, kind in cases:
        with pytest.raises(audio.AudioError) as e:
            audio.check_info("x.flac", info, 16000, 3600)
        assert e.value.kind == kind and "x.flac" in str(e.value)


def test_decode_rejects_stereo_and_rate(tmp_path):
    _write(tmp_path / "s.flac", channels=2)
    _write(tmp_path / "r.flac", rate=8000)
    with pytest.raises(audio.AudioError, match="channels"):
        audio.decode(str(tmp_path / "s.flac"))
    with pytest.raises(audio.AudioError, match="8000 Hz"):
        audio.decode(str(tmp_path / "r.flac"), 16000)


def test_min_samples_for():
    assert audio.min_samples_for(0.225, 16000) == 3600
    assert audio.min_samples_for(0.0001, 16000) == 2


@pytest.mark.parametrize("rate,channels", [(22050, 1), (44100, 1), (48000, 2), (16000, 2), (8000, 1)])
def test_convert_resamples_and_downmixes(tmp_path, rate, channels):
    """A 440 Hz tone at any rate / channel count comes out as the same tone at 16 kHz mono, with the length
    ``converted_length`` promises (what the manifest plans with)."""
    n = rate * 3 // 2 + 7
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    x = np.stack([tone * (1 + 0.5 * c) for c in range(channels)], axis=1)  # channel mean: 0.5 * 1.25 * tone
    sf.write(str(tmp_path / "t.wav"), x.astype(np.float32), rate, subtype="FLOAT")
    y = audio.decode(str(tmp_path / "t.wav"), 16000, convert=True)
    assert y.dtype == np.float32
    assert len(y) == audio.converted_length(n, rate, 16000) == round(n * 16000 / rate)
    gain = np.mean([1 + 0.5 * c for c in range(channels)])
    t = np.arange(len(y)) / 16000
    middle = slice(800, len(y) - 800)  # away from the resampler's edge transients
    np.testing.assert_allclose(y[middle], (gain * 0.5 * np.sin(2 * np.pi * 440 * t))[middle], atol=2e-3)
    info = audio.AudioInfo(n, rate, channels)
    expected = [s for s, on in ((f"{channels} channels -> mono", channels > 1),
                                (f"{rate} Hz -> 16000 Hz ({audio.RESAMPLER})", rate != 16000)) if on]
    assert audio.conversion(info, 16000) == ", ".join(expected)
    audio.check_info("x", info, 16000, 3600, convert=True)  # accepted with convert


def test_empty_and_short_audio_are_named_kinds(tmp_path):
    """0 samples -> empty_file, 100 samples -> too_short (also after conversion), in decode and check_info."""
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000)
    sf.write(str(tmp_path / "short.wav"), np.zeros(100, np.float32), 16000)
    sf.write(str(tmp_path / "short44.wav"), np.zeros(9000, np.float32), 44100)  # 3265 samples at 16 kHz
    for name, kind, convert in (("empty.wav", audio.EMPTY_FILE, False), ("empty.wav", audio.EMPTY_FILE, True),
                                ("short.wav", audio.TOO_SHORT, False),
                                ("short44.wav", audio.TOO_SHORT, True)):
        with pytest.raises(audio.AudioError) as e:
            audio.decode(str(tmp_path / name), 16000, convert=convert, min_samples=3600)
        assert e.value.kind == kind and name in str(e.value)
    with pytest.raises(audio.AudioError, match="3265 samples"):
        audio.check_info("x", audio.AudioInfo(9000, 44100, 1), 16000, 3600, convert=True)
    assert len(audio.decode(str(tmp_path / "short.wav"), 16000)) == 100  # min_samples defaults to 0


@pytest.mark.parametrize("check", ["full", "header"])
def test_non_finite_sample_is_its_own_kind(tmp_path, check):
    path = str(tmp_path / "nan.flac")  # a float WAV under a .flac name: soundfile reads it by content
    x = np.zeros(20000, np.float32)
    x[-5] = np.nan
    sf.write(path, x, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="sample 19995 is nan") as err:
        audio.probe(path, check)
    assert err.value.kind == audio.NON_FINITE and err.value.path == path
    with pytest.raises(audio.AudioError, match="non_finite"):
        audio.decode(path, 16000)


def test_read_blocks_equals_decode_and_names_a_late_nan(tmp_path):
    path = str(tmp_path / "x.wav")
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 10000).astype(np.float32)
    sf.write(path, x, 16000, subtype="FLOAT")
    blocks = list(audio.read_blocks(path, 16000, 3000))
    assert [len(b) for b in blocks] == [3000, 3000, 3000, 1000]
    np.testing.assert_array_equal(np.concatenate(blocks), audio.decode(path, 16000))
    x[7777] = np.inf
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="sample 7777 is inf"):
        list(audio.read_blocks(path, 16000, 3000))
    with pytest.raises(audio.AudioError, match="sample_rate"):
        list(audio.read_blocks(path, 8000, 3000))
