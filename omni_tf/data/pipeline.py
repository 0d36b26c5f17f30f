"""tf.data input pipeline: manifest(s) -> length-bucketed, padded batches (docs/DESIGN.md "Data").

Batch dict: ``features [B, T, 80] f32`` (CMVN applied, 0-padded), ``feature_lengths [B] i32``,
``tokens [B, U] i32`` (0-padded), ``token_lengths [B] i32``, ``ids [B] string``.

Batching is *planned in numpy* for each epoch (``plan_epoch``), then executed by tf.data: training shuffles
with ``np.random.default_rng([seed, epoch])`` (a new, reproducible order each epoch), cuts the order into
windows of ``shuffle_buffer`` utterances, sorts each window by (duration bucket, frames), packs batches so
that ``batch size * longest frames <= max_frames_per_batch`` (and ``<= batch_size`` utterances), then shuffles
the batch order. Speed-perturbation factors are drawn in the plan too, so the frame budget sees the true
lengths.
Eval sorts by length, never shuffles or augments, and yields every utterance exactly once.

Resuming: the plan is a pure function of (manifest, config, epoch), so ``make_dataset(..., epoch=e,
skip_batches=k)`` starts exactly at batch ``k`` of epoch ``e`` (with ``repeat=True``, ``k`` may run past the
end of epoch ``e`` into later epochs). The trainer stores (epoch, batches consumed) in its checkpoint; no
tf.data iterator state is saved.

Features come either from decoding FLAC inside the pipeline (soundfile in ``tf.numpy_function``; audio that
``prepare --convert_audio`` accepted at another rate / channel count is converted, ``omni_tf.data.audio``)
or from a feature cache (``data_config.feature_cache_dir``, built on first use). The cache is the default
("auto" = ``<manifest dir>/feature_cache``) because it measured faster (docs/BENCHMARKS.md "Input
pipeline"); training with wave-level augmentation (speed, noise, reverb) always decodes, since those act on
audio. Cache layout: ``<cache dir>/<settings key>/<utt id>.<source key>.npy`` (float16 [T, 80]); the
settings key hashes every ``config.data`` field the log-mel reads plus the resampler, the source key hashes
the audio file's absolute path, size in bytes and modification time (ns). So audio regenerated in place
(same ids, new content) or a changed feature setting never serves stale features; an entry of an id whose
source changed is replaced. CMVN is applied after the cache (``cmvn.json`` is not part of the key).

Labels holding ``<unk>`` (characters the tokenizer never saw) are counted and logged with their row ids
(``unk_report``) every time a dataset is built.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from omni_tf.data import audio as audio_lib
from omni_tf.data import augment, features, librispeech

_KEY_BASE = 1024  # batch key = batch_counter * _KEY_BASE + batch size
_FEATURE_FIELDS = ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_step_ms", "fft_length",
                   "lower_edge_hz", "upper_edge_hz", "log_floor")


def _wave_augmentation(data_config) -> bool:
    return bool(data_config.speed_perturb or data_config.noise or data_config.reverb)


def plan_epoch(num_samples: np.ndarray, data_config, training: bool, epoch: int = 0
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Deterministic batches for one epoch.

    Args:
      num_samples: [n] samples per utterance (manifest order).
    Returns:
      (batches: list of utterance-index arrays, in yield order; speed factor per utterance [n] float32).
    """
    c = data_config
    num_samples = np.asarray(num_samples, np.int64)
    n = len(num_samples)
    rng = np.random.default_rng([c.seed, epoch])
    factors = np.ones(n, np.float32)
    if training and c.speed_perturb:
        factors = rng.choice(np.asarray(c.speed_factors, np.float32), n)
    eff = np.round(num_samples / factors).astype(np.int64)
    frames = features.num_frames(eff, c)
    if training:
        order = rng.permutation(np.flatnonzero(eff <= c.max_duration_s * c.sample_rate))
        buckets = np.digitize(eff / c.sample_rate, np.asarray(c.bucket_boundaries_s, np.float64))
        window = max(1, int(c.shuffle_buffer))
        order = np.concatenate([o[np.lexsort((frames[o], buckets[o]))]
                                for o in np.array_split(order, max(1, -(-len(order) // window)))] or [[]])
        order = order.astype(np.int64)
    else:
        buckets = np.zeros(n, np.int64)
        order = np.argsort(frames, kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        t = max(int(frames[i]), 1)
        fits = (len(current) < c.batch_size and (len(current) + 1) * max(longest, t) <= c.max_frames_per_batch
                and (not current or buckets[i] == buckets[current[0]]))
        if current and not fits:
            batches.append(np.asarray(current, np.int64))
            current, longest = [], 0
        current.append(int(i))
        longest = max(longest, t)
    if current:
        batches.append(np.asarray(current, np.int64))
    if training:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches, factors


def feature_cache_path(cache_dir: str, data_config) -> str:
    """``<cache_dir>/<hash of the feature settings + resampler>``: a changed setting never reuses files."""
    spec = {k: data_config[k] for k in _FEATURE_FIELDS}
    spec["resampler"] = audio_lib.RESAMPLER
    return os.path.join(cache_dir, hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12])


def source_key(path: str) -> str:
    """12 hex digits of sha1(absolute path, size in bytes, mtime in ns) of an audio file.

    Raises:
      OSError: the file cannot be stat-ed.
    """
    st = os.stat(path)
    spec = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha1(spec.encode()).hexdigest()[:12]


def _safe_id(utt_id: str) -> str:
    return utt_id.replace(os.sep, "_")


def build_feature_cache(rows: list[dict], data_config, cache_dir: str) -> list[str]:
    """Writes float16 log-mel [T, 80] ``.npy`` files for rows whose audio is not cached as it is now.

    Returns:
      The cache file of each row, in order (see the module docstring for the layout and keys).
    Raises:
      OSError: the cache directory cannot be written or an audio file cannot be stat-ed.
    """
    path = feature_cache_path(cache_dir, data_config)
    os.makedirs(path, exist_ok=True)
    files = [os.path.join(path, f"{_safe_id(r['id'])}.{source_key(r['path'])}.npy") for r in rows]
    present = set(os.listdir(path))
    missing = [(r, f) for r, f in zip(rows, files, strict=True) if os.path.basename(f) not in present]
    if missing:
        logging.info("feature cache %s: computing %d of %d utterances", path, len(missing), len(rows))
        stale = {_safe_id(r["id"]) for r, _ in missing}
        for name in present:  # the same ids cached from an older version of their audio
            parts = name.rsplit(".", 2)
            if len(parts) == 3 and parts[2] in ("npy", "tmp") and parts[0] in stale:
                os.remove(os.path.join(path, name))
        for (_, file), f in zip(missing, features.features_from_paths([r["path"] for r, _ in missing],
                                                                      data_config), strict=True):
            tmp = file[: -len(".npy")] + ".tmp"
            with open(tmp, "wb") as out:
                np.save(out, f.numpy().astype(np.float16))
            os.replace(tmp, file)
    return files


def unk_report(rows: list[dict], tokens: Sequence[Sequence[int]], unk_id: int = 1, max_ids: int = 20
               ) -> tuple[int, list[str]]:
    """(number of labels holding ``unk_id``, the ids of those rows) for manifest rows and their token ids."""
    ids = [r["id"] for r, t in zip(rows, tokens, strict=True) if unk_id in t]
    return len(ids), ids[:max_ids]


def _model_samples(rows: list[dict], sample_rate: int) -> np.ndarray:
    """[n] samples per row at the model's rate (rows at another rate are resampled when decoded)."""
    return np.array([audio_lib.converted_length(r["num_samples"], r["sample_rate"], sample_rate)
                     for r in rows], np.int64)


def _resolve_cache_dir(data_config, manifest_paths: Sequence[str]) -> str:
    d = data_config.feature_cache_dir
    if d == "auto":
        return os.path.join(os.path.dirname(os.path.abspath(manifest_paths[0])), "feature_cache")
    return d


def _read_rows(manifest_path: str | Sequence[str]) -> tuple[list[str], list[dict]]:
    paths = manifest_path.split(",") if isinstance(manifest_path, str) else list(manifest_path)
    rows = [r for p in paths for r in librispeech.read_manifest(p)]
    if not rows:
        raise ValueError(f"no utterances in {paths}")
    return paths, rows


def num_batches(manifest_path: str | Sequence[str], data_config, training: bool, epoch: int = 0) -> int:
    """Batches in one epoch of ``make_dataset`` with the same arguments."""
    _, rows = _read_rows(manifest_path)
    return len(plan_epoch(_model_samples(rows, data_config.sample_rate), data_config, training, epoch)[0])


def make_dataset(manifest_path: str | Sequence[str], tokenizer, data_config, cmvn=None,
                 training: bool = False, epoch: int = 0, skip_batches: int = 0,
                 repeat: bool = False) -> tf.data.Dataset:
    """Batches of one manifest (or several: a list or a comma-separated string).

    Args:
      tokenizer: any object with ``.encode(text) -> list[int]`` (ids >= 1; 0 is padding/blank).
      cmvn: None (no normalization), ``(mean [80], std [80])`` or a ``cmvn.json`` path.
      training: shuffle + augmentation per ``data_config``; else deterministic, no augmentation.
      epoch: epoch whose plan to start from (the shuffle and augmentation seeds depend on it).
      skip_batches: batches of that plan to skip (exact resume).
      repeat: continue with epochs ``epoch + 1, ...`` forever.
    """
    c = data_config
    if c.batch_size >= _KEY_BASE:
        raise ValueError(f"batch_size must be < {_KEY_BASE}, got {c.batch_size}")
    manifest_paths, rows = _read_rows(manifest_path)
    if isinstance(cmvn, str):
        cmvn = features.load_cmvn(cmvn)
    num_samples = _model_samples(rows, c.sample_rate)
    too_long = int(np.sum(num_samples > c.max_duration_s * c.sample_rate))
    if training and too_long:
        logging.warning("%s: %d of %d utterances longer than max_duration_s=%s are not used for training",
                        manifest_paths, too_long, len(rows), c.max_duration_s)
    tokens = [list(tokenizer.encode(r["text"])) for r in rows]
    num_unk, unk_ids = unk_report(rows, tokens, getattr(tokenizer, "unk_id", 1))
    if num_unk:
        logging.warning("%s: %d of %d labels hold <unk> (characters the tokenizer never saw), rows: %s%s",
                        manifest_paths, num_unk, len(rows), ", ".join(unk_ids),
                        " ..." if num_unk > len(unk_ids) else "")
    table_paths = tf.constant([r["path"] for r in rows])
    table_ids = tf.constant([r["id"] for r in rows])
    table_tokens = tf.RaggedTensor.from_row_lengths(
        np.array([t for ts in tokens for t in ts], np.int32), np.array([len(t) for t in tokens], np.int64))

    cache_dir = _resolve_cache_dir(c, manifest_paths)
    use_cache = bool(cache_dir) and not (training and _wave_augmentation(c))
    if use_cache:
        try:
            table_files = tf.constant(build_feature_cache(rows, c, cache_dir))
        except OSError as e:
            logging.warning("feature cache %s unusable (%s): decoding audio in the pipeline", cache_dir, e)
            use_cache = False
    noise_corpus = augment.NoiseCorpus(c.noise_dir, c.sample_rate) if training and c.noise and c.noise_dir \
        else None

    def stream():
        e, skip, counter = epoch, skip_batches, 0
        while True:
            batches, factors = plan_epoch(num_samples, c, training, e)
            if not batches and repeat:
                raise ValueError("no utterance fits data_config.max_duration_s")
            for b in batches[skip:]:
                key = counter * _KEY_BASE + len(b)
                counter += 1
                for i in b:
                    yield i, key, factors[i], c.seed * 100_003 + e
            skip = max(0, skip - len(batches))
            if not repeat:
                return
            e += 1

    def decode(path):
        return audio_lib.decode(path.decode(), c.sample_rate, convert=True)

    def load(index, key, factor, seed0):
        seed = tf.stack([seed0, index])
        if use_cache:
            feats = tf.numpy_function(lambda f: np.load(f.decode()).astype(np.float32),
                                      [table_files[index]], tf.float32, stateful=False)
            feats = tf.reshape(feats, [-1, c.num_mel_bins])
        else:
            wave = tf.numpy_function(decode, [table_paths[index]], tf.float32, stateful=False)
            wave = tf.reshape(wave, [-1])
            if training and c.speed_perturb:
                wave = augment.speed_perturb(wave, factor)
            if training and (c.noise or c.reverb):
                noise = None
                if noise_corpus is not None:
                    noise = tf.reshape(tf.numpy_function(
                        lambda n, s: noise_corpus.segment(int(n), int(s)),
                        [tf.size(wave), seed0 * 1_000_003 + index], tf.float32, stateful=False), [-1])
                wave = augment.augment_audio(wave, seed, c, noise)
            feats = features.log_mel(wave, c)
        if cmvn is not None:
            feats = features.apply_cmvn(feats, *cmvn)
        length = tf.shape(feats)[0]
        if training and c.specaugment:
            feats = augment.spec_augment(feats, seed, c.freq_masks, c.freq_mask_width, c.time_masks,
                                         c.time_mask_max_ratio)
        toks = table_tokens[index]
        return {"features": feats, "feature_lengths": length, "tokens": toks,
                "token_lengths": tf.shape(toks, out_type=tf.int32)[0], "ids": table_ids[index]}, key

    spec = (tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int64))
    ds = tf.data.Dataset.from_generator(stream, output_signature=spec)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.group_by_window(
        key_func=lambda _, key: key,
        reduce_func=lambda _, window: window.padded_batch(
            c.batch_size, padded_shapes=({"features": [None, c.num_mel_bins], "feature_lengths": [],
                                          "tokens": [None], "token_lengths": [], "ids": []}, [])),
        window_size_func=lambda key: key % _KEY_BASE)
    ds = ds.map(lambda batch, _: batch)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
