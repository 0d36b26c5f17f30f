"""benchmarks/decodes.py: a cached evaluation is reused only for the utterances it was made on."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from benchmarks import decodes  # noqa: E402


class _FakeSupernet:
    restored: list = []

    def __init__(self, config):
        self.model, self.masks, self.levels = "model", None, (0.0,)

    def restore(self, workdir):
        _FakeSupernet.restored.append(workdir)


def _patch(monkeypatch, calls):
    def transcribe(model, batches, tokenizer):
        ids = [i for b in batches for i in decodes.evaluation.utterance_ids(b)]
        calls.append(ids)
        return ids, ["a b"] * len(ids), ["a b"] * len(ids)

    monkeypatch.setattr(decodes, "Supernet", _FakeSupernet)
    monkeypatch.setattr(decodes.evaluation, "transcribe", transcribe)


def _cached(results, ids):
    results.put("evals", "run/dense", {"wer": 0.5, "ids": ids, "refs": ["x"] * len(ids),
                                       "hyps": ["y"] * len(ids), "utterances": len(ids)})


def test_a_cached_evaluation_of_other_utterances_is_decoded_again(monkeypatch, tmp_path):
    calls = []
    _patch(monkeypatch, calls)
    _FakeSupernet.restored.clear()
    results = decodes.Results(str(tmp_path / "results.json"))
    _cached(results, ["u1", "u2", "u3"])  # e.g. made with a larger --eval_utterances
    data = ([{"ids": [b"u1", b"u2"]}], None)
    out = decodes.decode_levels(results, "wd", "run", None, {"dense": 0.0}, data)
    assert calls == [["u1", "u2"]] and _FakeSupernet.restored == ["wd"]
    assert out["dense"]["ids"] == ["u1", "u2"] and out["dense"]["wer"] == 0.0
    assert decodes.Results(results.path).get("evals", "run/dense")["utterances"] == 2


def test_a_cached_evaluation_of_the_same_utterances_is_reused(monkeypatch, tmp_path):
    calls = []
    _patch(monkeypatch, calls)
    results = decodes.Results(str(tmp_path / "results.json"))
    _cached(results, ["u1", "u2"])
    out = decodes.decode_levels(results, "wd", "run", None, {"dense": 0.0},
                                ([{"ids": [b"u1"]}, {"ids": ["u2"]}], None))
    assert calls == [] and out["dense"]["wer"] == 0.5
    assert decodes.decode_levels(results, "wd", "run", None, {"dense": 0.0}, None)["dense"]["wer"] == 0.5
