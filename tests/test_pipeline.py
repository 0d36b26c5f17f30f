"""Tests for omni_tf.data.pipeline: batch contract, eval exactly-once, seeded shuffle, exact resume, cache."""
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from omni_tf.configs import data as data_config_lib
from omni_tf.data import features, librispeech, pipeline


class CharTokenizer:
    """Tiny char-level stand-in for omni_tf.text.tokenizer.Tokenizer (ids >= 1)."""

    alphabet = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"

    def encode(self, text):
        return [self.alphabet.index(ch) + 1 for ch in text]


WORDS = ["A", "BE", "CAT", "DOGS", "EAGLE", "FOXES", "IT'S", "HI THERE", "NO", "YES SIR", "OK", "ZED"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    d = root / "train" / "7" / "70"
    d.mkdir(parents=True)
    lines = []
    for i, text in enumerate(WORDS):
        n = int(rng.integers(4000, 20000))
        t = np.arange(n) / 16000
        x = 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.02 * rng.standard_normal(n)
        sf.write(str(d / f"7-70-{i:04d}.flac"), x.astype(np.float32), 16000)
        lines.append(f"7-70-{i:04d} {text}\n")
    (d / "7-70.trans.txt").write_text("".join(lines))
    scan = librispeech.scan_split(str(root / "train"))
    assert len(scan.rows) == len(WORDS) and not scan.problems
    path = str(root / "train.tsv")
    librispeech.write_manifest(scan.rows, path)
    return path


@pytest.fixture()
def cfg():
    c = data_config_lib.get_config()
    c.batch_size, c.max_frames_per_batch, c.shuffle_buffer = 4, 400, 6
    c.feature_cache_dir = ""
    return c


def _run(ds):
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def _ids(batches):
    return [i.decode() for b in batches for i in b["ids"]]


def test_eval_contract_and_exactly_once(manifest, cfg):
    rows = {r["id"]: r for r in librispeech.read_manifest(manifest)}
    mean, std = np.full(80, -3.0, np.float32), np.full(80, 2.0, np.float32)
    ds = pipeline.make_dataset(manifest, CharTokenizer(), cfg, (mean, std), training=False)
    spec = ds.element_spec
    assert spec["features"].shape.as_list() == [None, None, 80] and spec["tokens"].dtype == tf.int32
    batches = _run(ds)
    ids = _ids(batches)
    assert sorted(ids) == sorted(rows) and len(ids) == len(rows)
    assert len(batches) == pipeline.num_batches(manifest, cfg, training=False)
    for b in batches:
        bsz, t = b["features"].shape[:2]
        assert bsz <= 4 and (bsz == 1 or bsz * t <= 400) and t == b["feature_lengths"].max()
        for j, utt in enumerate(b["ids"]):
            r = rows[utt.decode()]
            n_frames = b["feature_lengths"][j]
            assert n_frames == 1 + (r["num_samples"] - 400) // 160
            want_tokens = CharTokenizer().encode(r["text"])
            assert b["token_lengths"][j] == len(want_tokens)
            assert list(b["tokens"][j, :len(want_tokens)]) == want_tokens
            assert not b["tokens"][j, len(want_tokens):].any()
            assert not b["features"][j, n_frames:].any()
    b = batches[0]
    wave, _ = sf.read(rows[b["ids"][0].decode()]["path"], dtype="float32")
    want = (features.log_mel(wave, cfg).numpy() - mean) / std
    np.testing.assert_allclose(b["features"][0, :b["feature_lengths"][0]], want, atol=1e-4)
    assert _ids(_run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, None, training=False))) == ids


def test_training_shuffle_is_seeded_per_epoch(manifest, cfg):
    tok = CharTokenizer()
    e0 = _ids(_run(pipeline.make_dataset(manifest, tok, cfg, None, training=True, epoch=0)))
    e0_again = _ids(_run(pipeline.make_dataset(manifest, tok, cfg, None, training=True, epoch=0)))
    e1 = _ids(_run(pipeline.make_dataset(manifest, tok, cfg, None, training=True, epoch=1)))
    assert e0 == e0_again and e0 != e1 and sorted(e0) == sorted(e1) and len(set(e0)) == len(WORDS)


def test_skip_batches_resumes_exactly_across_epochs(manifest, cfg):
    tok = CharTokenizer()
    full0 = _run(pipeline.make_dataset(manifest, tok, cfg, None, training=True, epoch=0))
    full1 = _run(pipeline.make_dataset(manifest, tok, cfg, None, training=True, epoch=1))
    resumed = _run(pipeline.make_dataset(manifest, tok, cfg, None, training=True, epoch=0, skip_batches=2))
    assert len(resumed) == len(full0) - 2
    for a, b in zip(resumed, full0[2:], strict=True):
        assert list(a["ids"]) == list(b["ids"])
        np.testing.assert_array_equal(a["features"], b["features"])  # SpecAugment seeds match too
    rolled = pipeline.make_dataset(manifest, tok, cfg, None, training=True, epoch=0,
                                   skip_batches=len(full0) + 1, repeat=True)
    got = _run(rolled.take(2))
    assert [list(g["ids"]) for g in got] == [list(b["ids"]) for b in full1[1:3]]


def test_plan_epoch_budget_filter_and_speed(cfg):
    samples = np.array([16000 * s for s in (1, 2, 3, 40, 1, 2)])
    cfg.speed_perturb, cfg.max_frames_per_batch = True, 700
    batches, factors = pipeline.plan_epoch(samples, cfg, training=True, epoch=3)
    flat = np.concatenate(batches)
    assert sorted(flat) == [0, 1, 2, 4, 5]  # 40 s > max_duration_s
    assert np.isclose(factors[:, None], [0.9, 1.0, 1.1]).any(1).all() and len(set(factors)) > 1
    for b in batches:
        frames = features.num_frames(np.round(samples[b] / factors[b]).astype(int), cfg)
        assert len(b) == 1 or len(b) * frames.max() <= 700
    eval_batches, ones = pipeline.plan_epoch(samples, cfg, training=False)
    assert sorted(np.concatenate(eval_batches)) == list(range(6)) and np.all(ones == 1)  # long kept in eval


def test_speed_perturbation_changes_lengths(manifest, cfg):
    cfg.speed_perturb, cfg.specaugment, cfg.speed_factors = True, False, (1.1,)
    rows = {r["id"]: r for r in librispeech.read_manifest(manifest)}
    for b in _run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, None, training=True)):
        for utt, t in zip(b["ids"], b["feature_lengths"], strict=True):
            assert t == 1 + (round(rows[utt.decode()]["num_samples"] / 1.1) - 400) // 160


def test_feature_cache_matches_decoding(manifest, cfg, tmp_path):
    tok = CharTokenizer()
    cmvn_path = str(tmp_path / "cmvn.json")
    features.save_cmvn(cmvn_path, np.zeros(80), np.ones(80))
    decoded = _run(pipeline.make_dataset(manifest, tok, cfg, cmvn_path, training=False))
    cfg.feature_cache_dir = str(tmp_path / "cache")
    cached = _run(pipeline.make_dataset(manifest, tok, cfg, cmvn_path, training=False))
    cache_path = pipeline.feature_cache_path(cfg.feature_cache_dir, cfg)
    assert len([f for f in os.listdir(cache_path) if f.endswith(".npy")]) == len(WORDS)
    for a, b in zip(decoded, cached, strict=True):
        assert list(a["ids"]) == list(b["ids"])
        np.testing.assert_allclose(a["features"], b["features"], atol=0.02, rtol=2e-3)  # float16 storage
    cfg.num_mel_bins = 40
    assert pipeline.feature_cache_path(cfg.feature_cache_dir, cfg) != cache_path


def test_multiple_manifests_and_errors(manifest, cfg, tmp_path):
    ds = pipeline.make_dataset(f"{manifest},{manifest}", CharTokenizer(), cfg, None, training=False)
    assert len(_ids(_run(ds))) == 2 * len(WORDS)
    empty = str(tmp_path / "empty.tsv")
    librispeech.write_manifest([], empty)
    with pytest.raises(ValueError, match="no utterances"):
        pipeline.make_dataset(empty, CharTokenizer(), cfg)


def test_auto_cache_default_and_unwritable_fallback(manifest, tmp_path):
    cfg = data_config_lib.get_config()
    assert cfg.feature_cache_dir == "auto"
    cfg.batch_size, cfg.max_frames_per_batch = 4, 400
    n = len(_ids(_run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, training=False))))
    auto_dir = pipeline.feature_cache_path(os.path.join(os.path.dirname(manifest), "feature_cache"), cfg)
    assert n == len(WORDS) and len(os.listdir(auto_dir)) == len(WORDS)
    (tmp_path / "file").write_text("x")
    cfg.feature_cache_dir = str(tmp_path / "file" / "cache")  # cannot be created: decode instead
    assert len(_ids(_run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, training=False)))) == n


def test_wave_augmentation_with_noise_corpus(manifest, cfg, tmp_path):
    (tmp_path / "noise").mkdir()
    sf.write(str(tmp_path / "noise" / "n.flac"), np.random.default_rng(5).uniform(-1, 1, 5000), 16000)
    cfg.noise, cfg.noise_dir, cfg.noise_prob = True, str(tmp_path / "noise"), 1.0
    cfg.reverb, cfg.reverb_prob = True, 1.0
    cfg.specaugment, cfg.feature_cache_dir = False, str(tmp_path / "unused_cache")
    aug = _run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, None, training=True))
    assert not os.path.exists(cfg.feature_cache_dir)  # wave augmentation decodes
    again = _run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, None, training=True))
    cfg.noise = cfg.reverb = False
    clean = _run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, None, training=True))
    for a, b, c in zip(aug, again, clean, strict=True):
        assert list(a["ids"]) == list(c["ids"]) and a["features"].shape == c["features"].shape
        np.testing.assert_allclose(a["features"], b["features"], atol=1e-4)  # seeded
        assert np.abs(a["features"] - c["features"]).mean() > 0.1


def _corpus(root, lengths, rate=16000, channels=1, seed=0):
    """One chapter of sine+noise utterances of the given lengths (samples); returns the scanned rows."""
    rng = np.random.default_rng(seed)
    d = root / "train" / "7" / "70"
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, n in enumerate(lengths):
        x = 0.2 * np.sin(2 * np.pi * 300 * np.arange(n) / rate) + 0.02 * rng.standard_normal(n)
        x = np.stack([x, -0.5 * x], axis=1)[:, :channels] if channels > 1 else x
        sf.write(str(d / f"7-70-{i:04d}.flac"), x.astype(np.float32), rate)
        lines.append(f"7-70-{i:04d} {WORDS[i]}\n")
    (d / "7-70.trans.txt").write_text("".join(lines))
    scan = librispeech.scan_split(str(root / "train"), convert=True)
    assert len(scan.rows) == len(lengths) and not scan.problems
    return scan


def test_feature_cache_follows_audio_regenerated_in_place(cfg, tmp_path):
    """Same ids, new audio (new lengths), prepared again into the same directory: the cache serves the new
    features (on main it served the old ones), and the stale entries are replaced, not kept beside."""
    cfg.feature_cache_dir = "auto"
    manifest = str(tmp_path / "train.tsv")
    expected = {}
    for lengths in ([8000, 12000], [20000, 6400]):
        librispeech.write_manifest(_corpus(tmp_path, lengths).rows, manifest)
        batches = _run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, None, training=False))
        got = {i.decode(): int(t) for b in batches
               for i, t in zip(b["ids"], b["feature_lengths"], strict=True)}
        expected = {f"7-70-{i:04d}": int(features.num_frames(n, cfg)) for i, n in enumerate(lengths)}
        assert got == expected
        cache = pipeline.feature_cache_path(str(tmp_path / "feature_cache"), cfg)
        assert len(os.listdir(cache)) == len(lengths)
    cfg.feature_cache_dir = ""
    decoded = _run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, None, training=False))
    for a, b in zip(decoded, batches, strict=True):
        np.testing.assert_allclose(a["features"], b["features"], atol=0.02, rtol=2e-3)


def test_converted_rows_are_planned_and_decoded_at_the_model_rate(cfg, tmp_path):
    """A 22.05 kHz stereo corpus accepted by prepare's --convert_audio: the manifest keeps the file's rate and
    length; the pipeline resamples (soxr) and down-mixes, and plans with the 16 kHz length."""
    scan = _corpus(tmp_path, [22050, 33075], rate=22050, channels=2)
    assert [r["sample_rate"] for r in scan.rows] == [22050, 22050]
    assert [p for p, _ in scan.converted] == [r["path"] for r in scan.rows]
    assert scan.converted[0][1].startswith("2 channels -> mono, 22050 Hz -> 16000 Hz (soxr")
    manifest = str(tmp_path / "train.tsv")
    librispeech.write_manifest(scan.rows, manifest)
    got = [int(t) for b in _run(pipeline.make_dataset(manifest, CharTokenizer(), cfg, None, training=False))
           for t in b["feature_lengths"]]
    assert sorted(got) == [int(features.num_frames(16000, cfg)), int(features.num_frames(24000, cfg))]


def test_unk_labels_are_counted_and_named(cfg, manifest, caplog):
    class NoZ(CharTokenizer):
        unk_id = 1

        def encode(self, text):
            return [1 if ch in "Z'" else self.alphabet.index(ch) + 2 for ch in text]

    rows = librispeech.read_manifest(manifest)
    tokens = [NoZ().encode(r["text"]) for r in rows]
    assert pipeline.unk_report(rows, tokens) == (2, ["7-70-0006", "7-70-0011"])  # IT'S, ZED
    with caplog.at_level("WARNING"):
        pipeline.make_dataset(manifest, NoZ(), cfg, None, training=False)
    assert "2 of 12 labels hold <unk>" in caplog.text and "rows: 7-70-0006, 7-70-0011" in caplog.text
