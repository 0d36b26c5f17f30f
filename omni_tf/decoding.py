"""Transducer decoding: batched greedy, modified beam search, streaming greedy; detokenization.

Dimension key: B batch, T feature frames, T' encoder frames, D d_model, P predictor dim, V vocab.

All searches use the model's contract heads (``encode`` / ``encode_chunk``, ``predictor_step``,
``join_step``), so they decode exactly what the TFLite export runs. Blank is id 0; the predictor starts
from SOS = blank.
Scores are sums of log-probabilities along the chosen alignment (greedy: every chosen symbol incl. blanks;
beam: log-sum over the merged alignments of a hypothesis, at most one symbol per frame).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

import omni_tf  # noqa: F401

BLANK = 0
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _greedy_frames(model, enc, enc_lengths, pred, state, max_symbols: int):
    """Greedy over frames ``enc [B,T',D]`` (frames ``>= enc_lengths`` skipped) from ``(pred, state)``.

    Returns (emissions [N, B] int32, -1 = no token; score [B]; pred; state). Each frame emits up to
    ``max_symbols`` tokens, then moves on (also after a blank).
    """
    batch = tf.shape(enc)[0]
    emitted = tf.TensorArray(tf.int32, size=1, dynamic_size=True, clear_after_read=False)
    emitted = emitted.write(
        0, -tf.ones([batch], tf.int32)
    )  # sentinel row: stacking never sees an empty array
    n = tf.constant(1)
    score = tf.zeros([batch])
    for t in tf.range(tf.shape(enc)[1]):
        frame = enc[:, t]
        active = t < enc_lengths
        s = tf.constant(0)
        while s < max_symbols and tf.reduce_any(active):
            log_probs = model.join_step(frame, pred)
            token = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
            score += tf.where(active, tf.reduce_max(log_probs, axis=-1), 0.0)
            emit = active & (token != BLANK)
            if tf.reduce_any(emit):
                emitted = emitted.write(n, tf.where(emit, token, -1))
                n += 1
                new_pred, new_state = model.predictor_step(token, state)
                pred = tf.where(emit[:, None], new_pred, pred)
                state = {k: tf.where(emit[:, None], new_state[k], v) for k, v in state.items()}
            active = emit
            s += 1
    return emitted.stack(), score, pred, state


def _functions(model) -> dict:
    """Per-model tf.functions (traced once per input signature)."""
    if model not in _CACHE:
        _CACHE[model] = {
            "greedy": tf.function(
                lambda enc, lens, pred, state, m: _greedy_frames(model, enc, lens, pred, state, m),
                reduce_retracing=True,
            ),
            "encode": tf.function(model.encode, reduce_retracing=True),
            "encode_chunk": tf.function(model.encode_chunk),
            "predictor_step": tf.function(model.predictor_step, reduce_retracing=True),
            "join_step": tf.function(model.join_step, reduce_retracing=True),
        }
    return _CACHE[model]


def _rows(emissions: np.ndarray) -> list[list[int]]:
    return [[int(v) for v in col if v >= 0] for col in emissions.T]


def greedy_search(
    model,
    features: tf.Tensor,
    feature_lengths: tf.Tensor,
    max_symbols_per_frame: int = 4,
    return_scores: bool = False,
):
    """Batched greedy search. features [B,T,80], feature_lengths [B] -> list of B token lists
    (and scores [B] as a numpy array when ``return_scores``)."""
    fns = _functions(model)
    enc, enc_lengths = fns["encode"](features, tf.cast(feature_lengths, tf.int32))
    batch = tf.shape(enc)[0]
    pred, state = fns["predictor_step"](tf.zeros([batch], tf.int32), model.predictor_initial_state(batch))
    emissions, score, _, _ = fns["greedy"](enc, enc_lengths, pred, state, tf.constant(max_symbols_per_frame))
    hyps = _rows(emissions.numpy())
    return (hyps, score.numpy()) if return_scores else hyps


def streaming_greedy_search(model, features: tf.Tensor, max_symbols_per_frame: int = 4) -> list[int]:
    """Greedy search chunk by chunk through ``encode_chunk``, carrying encoder caches and predictor state.

    features [1,T,80] (one utterance). Follows the feeding rule of ``omni_tf.model``: zero-pad to
    ``n*CF + LA`` frames and feed windows ``[c*CF, c*CF + CF + LA)``. Gives the same tokens as
    ``greedy_search`` on the same utterance.
    """
    fns = _functions(model)
    features = tf.convert_to_tensor(features, tf.float32)
    if features.shape.rank != 3 or features.shape[0] != 1:
        raise ValueError(f"streaming_greedy_search expects features [1, T, 80], got {features.shape}")
    num_frames = int(features.shape[1])
    cf, la, ce = model.chunk_frames, model.lookahead_frames, model.chunk_enc
    padded = model.encoder.pad_features(features, tf.constant([num_frames]))
    valid = (num_frames + model.model_config["subsampling_factor"] - 1) // model.model_config[
        "subsampling_factor"
    ]
    enc_state = model.encoder_initial_state(1)
    pred, state = fns["predictor_step"](tf.zeros([1], tf.int32), model.predictor_initial_state(1))
    tokens: list[int] = []
    for c in range((int(padded.shape[1]) - la) // cf):
        enc, enc_state = fns["encode_chunk"](padded[:, c * cf : c * cf + cf + la], enc_state)
        chunk_valid = tf.constant([min(max(valid - c * ce, 0), ce)], tf.int32)
        emissions, _, pred, state = fns["greedy"](
            enc, chunk_valid, pred, state, tf.constant(max_symbols_per_frame)
        )
        tokens += _rows(emissions.numpy())[0]
    return tokens


def _modified_beam_search(fns, enc: tf.Tensor, pred0: tf.Tensor, state0: dict, beam: int):
    """One utterance ``enc [T', D]``: modified beam search (<= 1 symbol per frame, merged hypotheses).

    Returns hypotheses sorted best first as (tokens tuple, log-prob).
    """
    # hypothesis -> (log-prob, pred [P], state {name: [H]}); pred/state depend only on the tokens
    hyps = {(): (0.0, pred0[0], {k: v[0] for k, v in state0.items()})}
    for t in range(int(enc.shape[0])):
        keys = list(hyps)
        scores = np.array([hyps[k][0] for k in keys])
        preds = tf.stack([hyps[k][1] for k in keys])
        log_probs = fns["join_step"](tf.repeat(enc[t : t + 1], len(keys), axis=0), preds).numpy()
        cand = (scores[:, None] + log_probs).reshape(-1)
        top = np.argsort(-cand, kind="stable")[:beam]
        new: dict = {}
        expand: list = []  # (new key, parent key, token)
        for idx in top:
            parent, token = divmod(int(idx), log_probs.shape[1])
            key = keys[parent] if token == BLANK else keys[parent] + (token,)
            if key in new:
                new[key] = (np.logaddexp(new[key][0], cand[idx]),) + new[key][1:]
            elif token == BLANK:
                new[key] = (cand[idx],) + hyps[keys[parent]][1:]
            else:
                new[key] = (cand[idx], None, None)
                expand.append((key, keys[parent], token))
        if expand:
            parent_states = {n: tf.stack([hyps[p][2][n] for _, p, _ in expand]) for n in state0}
            out, out_state = fns["predictor_step"](
                tf.constant([tok for _, _, tok in expand], tf.int32), parent_states
            )
            for i, (key, _, _) in enumerate(expand):
                new[key] = (new[key][0], out[i], {n: v[i] for n, v in out_state.items()})
        hyps = new
    return sorted(((k, float(v[0])) for k, v in hyps.items()), key=lambda kv: -kv[1])


def beam_search(model, features: tf.Tensor, feature_lengths: tf.Tensor, beam: int = 4):
    """Modified beam search (k2/icefall style: at most one symbol per frame, hypotheses with equal tokens
    merged by log-sum-exp). features [B,T,80], lengths [B] -> (list of B best token lists, scores [B])."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    fns = _functions(model)
    enc, enc_lengths = fns["encode"](features, tf.cast(feature_lengths, tf.int32))
    pred0, state0 = fns["predictor_step"](tf.zeros([1], tf.int32), model.predictor_initial_state(1))
    hyps, scores = [], []
    for b in range(int(enc.shape[0])):
        best, score = _modified_beam_search(fns, enc[b, : int(enc_lengths[b])], pred0, state0, beam)[0]
        hyps.append(list(best))
        scores.append(score)
    return hyps, np.array(scores, np.float32)


def detokenize(tokenizer, hyps: Sequence[Sequence[int]]) -> list[str]:
    """Token id lists -> strings through any tokenizer with ``.decode(ids)`` (omni_tf.text.tokenizer)."""
    return [tokenizer.decode([int(i) for i in h]) for h in hyps]
