"""SeededDropout: dropout whose masks are a pure function of a seed, so a resumed run draws the same masks.

Keras' ``Dropout`` draws from a stateful generator whose state is not in the checkpoint: after a restart the
first step's masks (and loss) differ from an uninterrupted run. Here the caller (the train step) opens
``dropout_seed(seed)`` around a forward pass; inside it the k-th dropout call of the pass uses
``stateless_fold_in(seed, k)``. The call order of a model's forward pass is fixed by its code, so masks
depend on (seed, call index, input shape) only: not on layer names, on the process, or on what ran before.

Outside a ``dropout_seed`` scope, ``training=True`` falls back to TF's global (stateful, not reproducible)
generator, as Keras' ``Dropout`` does. Inverted dropout (Srivastava et al., JMLR 2014, Sec. 10): kept units
are scaled by ``1 / (1 - rate)`` so inference needs no rescaling.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

_local = threading.local()  # MirroredStrategy traces each replica in its own thread


@contextlib.contextmanager
def dropout_seed(seed: tf.Tensor) -> Iterator[None]:
    """Within the scope, the k-th ``SeededDropout`` call uses seed ``stateless_fold_in(seed, k)``.

    ``seed``: ``[2]`` int64 (or int32) tensor, e.g. derived from (config seed, step). Scopes nest (the inner
    one wins) and are per thread.
    """
    previous = getattr(_local, "state", None)
    _local.state = [tf.cast(seed, tf.int64), 0]
    try:
        yield
    finally:
        _local.state = previous


def _next_seed() -> tf.Tensor | None:
    state = getattr(_local, "state", None)
    if state is None:
        return None
    state[1] += 1
    return tf.random.experimental.stateless_fold_in(state[0], state[1] - 1)


class SeededDropout(keras.layers.Layer):
    """``[...] -> [...]``: zeroes each element with probability ``rate`` when training (kept ones scaled by
    ``1 / (1 - rate)``); identity at inference. Masks come from the enclosing ``dropout_seed`` scope."""

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training or self.rate == 0.0:
            return x
        seed = _next_seed()
        if seed is None:
            return tf.nn.dropout(x, self.rate)
        return tf.nn.experimental.stateless_dropout(x, self.rate, seed)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(rate=self.rate)
        return config
