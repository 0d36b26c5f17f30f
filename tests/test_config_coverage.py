"""Every leaf of every preset and variant is read by something: no config field is silently ignored.

model / sparsity / training: recorded while the training state is built (``loop.TrainState``: the
``Supernet`` with model, masks, schedule, sampler; optimizer; loop settings; ``make_strategy``), by patching
``ConfigDict`` item access (and the dict ``to_dict`` hands to ``build_model``). Every sparsity field is read
exactly once (``supernet.SparsitySettings``). data / paths / top level: those are read by the data pipeline
and the recipes, conditionally (e.g. noise settings only with ``noise=True``), so they are checked statically:
the field name must be read (``.name``, ``["name"]`` or ``.get("name"``) somewhere outside omni_tf/configs.
"""
from __future__ import annotations

import collections
import os
import re
import sys

import ml_collections
import pytest
from ml_collections.config_dict import config_dict as cd_module

import omni_tf  # noqa: F401
from omni_tf.configs import experiment
from omni_tf.configs import model as model_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_ARGS = [*model_configs.PRESETS, "tiny,smoke", "tiny,demo", "tiny,demo,smoke", "tiny,demo,finetune",
               "tiny,demo,finetune,smoke", "paper,librispeech", "paper,librispeech,smoke",
               "paper,librispeech,finetune"]
TRACKED = ("model", "sparsity", "training")
_ACCESSORS = {"__getitem__", "__getattr__", "get"}


def leaves(c: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for key in c.keys():
        value = c._fields[key]
        path = f"{prefix}{key}"
        out += leaves(value, path + ".") if isinstance(value, ml_collections.ConfigDict) else [path]
    return out


class _ReadRecorder:
    """Counts reads of ConfigDict leaves by code outside ml_collections (bulk copies like ``items()`` or
    ``deepcopy`` are not reads); ``to_dict()`` hands out a dict that counts its reads too."""

    def __init__(self, root: ml_collections.ConfigDict):
        self.paths: dict[int, str] = {}
        self._index(root, "")
        self.reads: collections.Counter[str] = collections.Counter()

    def _index(self, c, prefix):
        self.paths[id(c)] = prefix
        for key in c.keys():
            if isinstance(c._fields[key], ml_collections.ConfigDict):
                self._index(c._fields[key], f"{prefix}{key}.")

    def direct_access(self) -> bool:
        frame = sys._getframe(2)
        names = set()
        while frame is not None and frame.f_code.co_filename == cd_module.__file__:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        return names <= _ACCESSORS

    def patch(self, monkeypatch):
        recorder = self
        original_getitem, original_to_dict = ml_collections.ConfigDict.__getitem__, \
            ml_collections.ConfigDict.to_dict

        class CountingDict(dict):
            def __init__(self, data, prefix):
                super().__init__(data)
                self.prefix = prefix

            def __getitem__(self, key):
                recorder.reads[self.prefix + str(key)] += 1
                return super().__getitem__(key)

            def get(self, key, default=None):
                if key in self:
                    recorder.reads[self.prefix + str(key)] += 1
                return super().get(key, default)

        def getitem(self, key):
            prefix = recorder.paths.get(id(self))
            if prefix is not None and recorder.direct_access():
                recorder.reads[prefix + str(key)] += 1
            return original_getitem(self, key)

        def to_dict(self, *args, **kwargs):
            out = original_to_dict(self, *args, **kwargs)
            prefix = recorder.paths.get(id(self))
            return out if prefix is None else CountingDict(out, prefix)

        monkeypatch.setattr(ml_collections.ConfigDict, "__getitem__", getitem)
        monkeypatch.setattr(ml_collections.ConfigDict, "to_dict", to_dict)


def _shrink(config: ml_collections.ConfigDict) -> None:
    """Model dimensions small enough to build every preset in a second (writes are not reads)."""
    m = config.model
    m.d_model, m.num_layers, m.num_heads, m.ff_dim = 32, 1, 2, 64
    m.vocab_size, m.pred_embed_dim, m.pred_hidden, m.joint_dim = 16, 16, 32, 32


@pytest.mark.parametrize("arg", CONFIG_ARGS)
def test_every_model_sparsity_training_field_is_read_by_the_builders(arg, monkeypatch):
    from omni_tf.training import loop

    config = experiment.get_config(arg)
    _shrink(config)
    recorder = _ReadRecorder(config)
    recorder.patch(monkeypatch)
    loop.TrainState(config, loop.make_strategy(config.training))
    monkeypatch.undo()
    tracked = [p for p in leaves(config) if p.split(".")[0] in TRACKED]
    unread = [p for p in tracked if recorder.reads[p] == 0]
    assert not unread, f"config fields read by nothing while building the training state: {unread}"
    sparsity_twice = {p: recorder.reads[p] for p in tracked
                      if p.startswith("sparsity.") and recorder.reads[p] != 1}
    assert not sparsity_twice, f"sparsity fields must be read once (SparsitySettings): {sparsity_twice}"


def _code_outside_configs() -> str:
    texts = []
    for top in ("omni_tf", "recipes", "tflite_export"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            if os.path.join("omni_tf", "configs") in dirpath:
                continue
            texts += [open(os.path.join(dirpath, f), encoding="utf-8").read()
                      for f in files if f.endswith(".py")]
    return "\n".join(texts)


@pytest.mark.parametrize("arg", CONFIG_ARGS)
def test_every_data_and_paths_field_is_read_somewhere(arg):
    code = _code_outside_configs()
    config = experiment.get_config(arg)
    others = [p for p in leaves(config) if p.split(".")[0] not in TRACKED]
    unread = [p for p in others if not re.search(
        rf"\.{re.escape(p.split('.')[-1])}\b|\[\"{re.escape(p.split('.')[-1])}\"\]|get\(\"{p.split('.')[-1]}\"",
        code)]
    assert not unread, f"config fields no code reads: {unread}"


def test_the_coverage_check_fails_on_a_field_nothing_reads(monkeypatch):
    from omni_tf.configs import sparsity

    original = sparsity.get_config

    def with_dead_field():
        c = original()
        c.dead_field = 1
        return c

    monkeypatch.setattr(sparsity, "get_config", with_dead_field)
    with pytest.raises(AssertionError, match="sparsity.dead_field"):
        test_every_model_sparsity_training_field_is_read_by_the_builders("tiny,smoke", monkeypatch)


def test_unknown_variant_raises_naming_the_known_ones():
    known = r"known variants: \['demo', 'finetune', 'librispeech', 'smoke'\]"
    with pytest.raises(ValueError, match=r"\['smok'\].*" + known):
        experiment.get_config("tiny,smok")
    with pytest.raises(ValueError, match="unknown model preset 'tinny'"):
        experiment.get_config("tinny")
    smoke_first = experiment.get_config("tiny,smoke,demo")
    assert smoke_first.training.max_steps == experiment.get_config("tiny,demo,smoke").training.max_steps == 6


def test_finetune_variant_values_relative_to_max_steps():
    c = experiment.get_config("tiny,demo,finetune")  # max_steps 2500 (demo)
    assert c.variants == ("demo", "finetune")
    assert (c.training.learning_rate, c.training.warmup_steps, c.sparsity.dense_warmup) == (1e-3, 50, False)
    assert (c.sparsity.begin_step, c.sparsity.end_step, c.sparsity.frequency) == (50, 1250, 80)
    paper = experiment.get_config("paper,librispeech,finetune")  # 280000 steps: 2 % and 50 % of them
    sp = paper.sparsity
    assert (sp.begin_step, sp.end_step, sp.frequency) == (5600, 140000, 8960)
    order = experiment.get_config("tiny,finetune,demo")  # applied after demo, whatever the order given
    assert order.variants == ("demo", "finetune") and order.sparsity.begin_step == 50
    smoke = experiment.get_config("tiny,demo,finetune,smoke")  # smoke last: its few steps win
    assert (smoke.training.max_steps, smoke.training.warmup_steps, smoke.sparsity.begin_step,
            smoke.sparsity.end_step, smoke.sparsity.dense_warmup) == (6, 2, 1, 4, False)
    assert experiment.get_config("tiny,demo").variants == ("demo",)
    assert experiment.get_config("tiny").variants == ()


def test_with_variant_is_the_config_string_variant_and_keeps_explicit_settings():
    demo = experiment.get_config("tiny,demo")
    added = experiment.with_variant(demo, "finetune")
    assert added.to_dict() == experiment.get_config("tiny,demo,finetune").to_dict()
    assert demo.variants == ("demo",) and demo.sparsity.dense_warmup  # the input is not modified
    smoke = experiment.with_variant(experiment.get_config("tiny,demo,smoke"), "finetune")
    assert smoke.to_dict() == experiment.get_config("tiny,demo,finetune,smoke").to_dict()
    overridden = experiment.get_config("tiny,demo")  # as --config.training.*=... on the command line
    overridden.training.learning_rate, overridden.training.max_steps = 2e-3, 5000
    c = experiment.with_variant(overridden, "finetune")
    assert c.training.learning_rate == 2e-3 and c.training.max_steps == 5000  # explicit values kept
    assert (c.sparsity.begin_step, c.sparsity.end_step, c.sparsity.frequency) == (100, 2500, 160)  # of 5000
    assert c.training.warmup_steps == 50 and not c.sparsity.dense_warmup
    already = experiment.get_config("tiny,demo,finetune")
    already.training.warmup_steps = 7
    again = experiment.with_variant(already, "finetune")  # applied already: nothing changes
    assert again.to_dict() == already.to_dict() and again is not already
    with pytest.raises(ValueError, match="unknown config variant 'fine'.*'finetune'"):
        experiment.with_variant(demo, "fine")
