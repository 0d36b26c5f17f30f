"""Data sources for the trainer: ``dataset(epoch, skip_batches)`` -> ``tf.data.Dataset`` of global batches;
the same (epoch, skip_batches) always yields the same batches (exact resume).

``ManifestSource`` wraps ``omni_tf.data.pipeline.make_dataset`` (train manifest, tokenizer, CMVN from
``config.paths``; ``manifest_path`` / ``spm_cmvn_paths`` resolve those files for every other reader);
``RandomFeatureSource`` is a features-only source (random log-mel-like features and random labels, a pure
function of (seed, epoch)) for tests and step benchmarks.
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np
import tensorflow as tf


def _existing(what: str, path: str) -> str:
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path!r} (set config.paths.manifest_dir or the path)")
    return path


def spm_cmvn_paths(config: ml_collections.ConfigDict) -> tuple[str, str]:
    """The SentencePiece model and CMVN json of ``config.paths`` (``spm_model`` / ``cmvn``, else
    ``<manifest_dir>/spm.model`` / ``cmvn.json``); FileNotFoundError naming a missing one."""
    p = config.paths
    return (_existing("spm model", p.spm_model or os.path.join(p.manifest_dir, "spm.model")),
            _existing("cmvn", p.cmvn or os.path.join(p.manifest_dir, "cmvn.json")))


def _paths(config: ml_collections.ConfigDict, split: str) -> tuple[str, str, str]:
    p = config.paths
    named = {"train": p.train_manifest, "dev": p.dev_manifest, "test": p.test_manifest}.get(split, "")
    manifest = named or os.path.join(p.manifest_dir, f"{split}.tsv")  # else <manifest_dir>/<split>.tsv
    for one in manifest.split(","):  # comma-separated: several manifests
        _existing("manifest", one)
    spm, cmvn = spm_cmvn_paths(config)
    from omni_tf.data.prepare import check_prepared  # noqa: PLC0415

    check_prepared([*manifest.split(","), cmvn])  # refuses files of an unfinished or altered prepare
    return manifest, spm, cmvn


def manifest_path(config: ml_collections.ConfigDict, split: str) -> str:
    """The (first) manifest of ``split`` (train / dev / test: ``config.paths.<split>_manifest``, else
    ``<manifest_dir>/<split>.tsv``); FileNotFoundError if it, the SentencePiece model or CMVN is missing."""
    return _paths(config, split)[0].split(",")[0]


class ManifestSource:
    """Batches of a manifest split through the data pipeline, reshuffled per epoch (deterministically).

    ``manifest``, ``spm_path``, ``cmvn_path``: the files it reads (``config.paths``, resolved).
    """

    def __init__(self, config: ml_collections.ConfigDict, split: str = "train", training: bool = True):
        from omni_tf.data import features, pipeline  # noqa: PLC0415
        from omni_tf.text.tokenizer import Tokenizer, check_model_vocab  # noqa: PLC0415

        self.manifest, self.spm_path, self.cmvn_path = _paths(config, split)
        self.tokenizer = Tokenizer(self.spm_path)
        check_model_vocab(self.tokenizer, config.model.vocab_size, "config.model.vocab_size")
        self.cmvn = features.load_cmvn(self.cmvn_path)
        self.data_config, self.training = config.data, training
        self._make = pipeline.make_dataset

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        return self._make(self.manifest, self.tokenizer, self.data_config, self.cmvn, training=self.training,
                          epoch=epoch, skip_batches=skip_batches)


class RandomFeatureSource:
    """``num_batches`` batches per epoch of ``batch_size`` random utterances (features ~ N(0,1)).

    Frames per utterance in ``[min_frames, max_frames]``, labels in ``[2, vocab_size)`` with 1..max_labels per
    utterance; every batch is padded to its own longest utterance. ``nan_batch`` (global batch index within
    each epoch, or -1) gets NaN features, to exercise the non-finite skip.
    """

    def __init__(self, vocab_size: int, num_batches: int = 4, batch_size: int = 4, min_frames: int = 40,
                 max_frames: int = 80, max_labels: int = 6, seed: int = 0, nan_batch: int = -1,
                 num_mel_bins: int = 80):
        self.vocab_size, self.num_batches, self.batch_size = vocab_size, num_batches, batch_size
        self.min_frames, self.max_frames, self.max_labels = min_frames, max_frames, max_labels
        self.seed, self.nan_batch, self.num_mel_bins = seed, nan_batch, num_mel_bins

    def batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, index])
        b = self.batch_size
        lengths = rng.integers(self.min_frames, self.max_frames + 1, b).astype(np.int32)
        labels = rng.integers(1, self.max_labels + 1, b).astype(np.int32)
        feats = rng.standard_normal((b, int(lengths.max()), self.num_mel_bins)).astype(np.float32)
        feats *= (np.arange(feats.shape[1])[None, :, None] < lengths[:, None, None])
        if index == self.nan_batch:
            feats[:] = np.nan
        tokens = rng.integers(2, self.vocab_size, (b, int(labels.max()))).astype(np.int32)
        tokens *= np.arange(tokens.shape[1])[None, :] < labels[:, None]
        ids = np.array([f"e{epoch}-b{index}-u{i}" for i in range(b)])
        return {"features": feats, "feature_lengths": lengths, "tokens": tokens, "token_lengths": labels,
                "ids": ids}

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        spec = {"features": tf.TensorSpec([None, None, self.num_mel_bins], tf.float32),
                "feature_lengths": tf.TensorSpec([None], tf.int32),
                "tokens": tf.TensorSpec([None, None], tf.int32),
                "token_lengths": tf.TensorSpec([None], tf.int32), "ids": tf.TensorSpec([None], tf.string)}
        return tf.data.Dataset.from_generator(
            lambda: (self.batch(epoch, i) for i in range(skip_batches, self.num_batches)),
            output_signature=spec)
