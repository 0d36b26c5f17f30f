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
               "paper,librispeech,finetune", "tiny,demo,finetune,tier_sandwich,smoke"]
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
    known = r"known variants: \['demo', 'finetune', 'librispeech', 'smoke', 'tier_sandwich'\]"
    with pytest.raises(ValueError, match=r"\['smok'\].*" + known):
        experiment.get_config("tiny,smok")
    with pytest.raises(ValueError, match="unknown model preset 'tinny'"):
        experiment.get_config("tinny")
    smoke_first = experiment.get_config("tiny,smoke,demo")
    assert smoke_first.training.max_steps == experiment.get_config("tiny,demo,smoke").training.max_steps == 6


def test_finetune_variant_values_relative_to_max_steps():
    c = experiment.get_config("tiny,demo,finetune")  # max_steps 2500 (demo)
    assert c.variants == ("demo", "finetune")
    assert (c.training.learning_rate, c.training.warmup_steps, c.sparsity.dense_warmup) == (2e-3, 50, False)
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


def test_tier_sandwich_variant_trains_every_tier_with_distillation_and_keeps_explicit_settings():
    c = experiment.get_config("tiny,demo,finetune,tier_sandwich")
    assert c.variants == ("demo", "finetune", "tier_sandwich")
    assert (c.sparsity.sampler, c.sparsity.distill_weight, c.sparsity.distill_mode) == ("tiers", 0.5, "mix")
    base = experiment.get_config("tiny,demo,finetune")
    assert base.sparsity.sampler == "uniform" and base.sparsity.distill_weight == 0.0
    assert c.training.to_dict() == base.training.to_dict()  # the schedule is finetune's, untouched
    added = experiment.with_variant(base, "tier_sandwich")
    assert added.to_dict() == c.to_dict()
    uniform = experiment.get_config("tiny,demo")
    uniform.sparsity.distill_weight = 0.2  # --config.sparsity.distill_weight=0.2: kept
    kept = experiment.with_variant(uniform, "tier_sandwich")
    assert (kept.sparsity.sampler, kept.sparsity.distill_weight) == ("tiers", 0.2)
    # a default value given on the command line (--config.sparsity.sampler=uniform) is kept only when named
    named = experiment.with_variant(uniform, "tier_sandwich", keep=("sparsity.sampler",))
    assert (named.sparsity.sampler, named.sparsity.distill_weight) == ("uniform", 0.2)
    with pytest.raises(ValueError, match=r"\['sparsity.sampeler'\] are not fields"):
        experiment.with_variant(uniform, "tier_sandwich", keep=("sparsity.sampeler",))
    # the LibriSpeech schedule adopts it (what won on the demo), after its dense warm-up
    paper = experiment.get_config("paper,librispeech")
    assert (paper.sparsity.sampler, paper.sparsity.distill_weight, paper.sparsity.distill_mode) == (
        "tiers", 0.5, "mix")
    assert paper.sparsity.dense_warmup and paper.sparsity.begin_step == 60000


FILE_FIELDS = ("train_manifest", "dev_manifest", "test_manifest", "spm_model", "cmvn")


def _with_paths(**paths: str) -> ml_collections.ConfigDict:
    c = experiment.get_config("tiny,smoke")
    c.paths.update(paths)
    return c


def test_with_data_dir_derives_the_unset_paths_from_the_data_dir():
    c = experiment.with_data_dir(experiment.get_config("tiny"), "/d")
    assert c.paths.to_dict() == {"manifest_dir": "/d", "train_manifest": "", "dev_manifest": "",
                                 "test_manifest": "", "spm_model": "", "cmvn": ""}  # "" = <manifest_dir>/...
    c = experiment.with_data_dir(experiment.get_config("tiny"), "/d", train="a.tsv,b.tsv",
                                 test="test-other.tsv", cmvn="c.json")
    assert (c.paths.train_manifest, c.paths.dev_manifest, c.paths.test_manifest, c.paths.cmvn) == (
        "/d/a.tsv,/d/b.tsv", "", "/d/test-other.tsv", "/d/c.json")


def test_with_data_dir_empty_keeps_the_config_paths():
    config = _with_paths(manifest_dir="/m", train_manifest="/x/t.tsv", spm_model="/x/s.model",
                         cmvn="/x/c.json")
    assert experiment.with_data_dir(config, "").paths.to_dict() == config.paths.to_dict()


@pytest.mark.parametrize("field", FILE_FIELDS)
def test_with_data_dir_keeps_an_explicit_path(field):
    c = experiment.with_data_dir(_with_paths(**{field: "/elsewhere/f"}), "/d")
    assert c.paths[field] == "/elsewhere/f" and c.paths.manifest_dir == "/d"
    assert all(c.paths[f] == "" for f in FILE_FIELDS if f != field)


@pytest.mark.parametrize("field", FILE_FIELDS)
def test_with_data_dir_refuses_an_explicit_path_other_than_the_file_the_caller_names(field):
    name = field.replace("_manifest", "")
    config = _with_paths(**{field: "/elsewhere/f"})
    with pytest.raises(ValueError, match=rf"--data_dir '/d' conflicts with --config\.paths\.{field}="
                                         r"'/elsewhere/f' \(the data dir gives '/d/n.tsv'\)"):
        experiment.with_data_dir(config, "/d", **{name: "n.tsv"})
    assert config.paths[field] == "/elsewhere/f"  # the input config is left alone
    same = experiment.with_data_dir(_with_paths(**{field: "/d/./n.tsv"}), "/d/", **{name: "n.tsv"})
    assert same.paths[field] == "/d/n.tsv"  # the very file named: no conflict


def test_with_data_dir_refuses_another_manifest_dir_naming_the_source():
    with pytest.raises(ValueError, match=r"--init=shipped's data copy '/d' conflicts with "
                                         r"--config\.paths\.manifest_dir='/m'"):
        experiment.with_data_dir(_with_paths(manifest_dir="/m"), "/d", source="--init=shipped's data copy")
    assert experiment.with_data_dir(_with_paths(manifest_dir="/d/"), "/d").paths.manifest_dir == "/d"


def test_explicit_and_derived_paths_resolve_to_the_files_read(tmp_path):
    """What ``omni_tf.training.sources`` (training, search, evaluate and every export step) reads."""
    from omni_tf.training import sources

    data, mine = tmp_path / "data", tmp_path / "mine"
    for folder, names in ((data, ("train.tsv", "dev.tsv", "spm.model", "cmvn.json")),
                          (mine, ("a.tsv", "b.tsv", "spm.model"))):
        folder.mkdir()
        for name in names:
            (folder / name).write_text("x")
    config = _with_paths(train_manifest=f"{mine}/a.tsv,{mine}/b.tsv", spm_model=f"{mine}/spm.model")
    c = experiment.with_data_dir(config, str(data))
    assert sources.spm_cmvn_paths(c) == (f"{mine}/spm.model", f"{data}/cmvn.json")
    assert sources.manifest_path(c, "train") == f"{mine}/a.tsv"  # the first of several
    assert sources.manifest_path(c, "dev") == f"{data}/dev.tsv"
    with pytest.raises(FileNotFoundError, match=r"manifest not found: '.*/mine/c.tsv'"):
        missing = experiment.with_data_dir(_with_paths(train_manifest=f"{mine}/c.tsv"), str(data))
        sources.manifest_path(missing, "train")
