"""omni_tf.training.pretrained (shipped dense bundles), training.init_from, run_demo's --init=shipped data."""
import json
import os

import numpy as np
import pytest

import omni_tf  # noqa: F401
from omni_tf.model import build_model
from omni_tf.supernet import Supernet
from omni_tf.training import loop, pretrained, sources
from recipes import end_to_end as e2e
from recipes.stages import Stages
from tests.training_helpers import make_bundle, tiny_config


def test_init_from_bundle_sets_weights_on_a_fresh_run_only(tmp_path, monkeypatch):
    config = tiny_config("dense")
    path = make_bundle(str(tmp_path), config)
    with np.load(os.path.join(path, "weights.npz")) as data:
        shipped = {k: data[k] for k in data.files}
    assert all(a.dtype == np.float16 for a in shipped.values())
    calls = []
    real = pretrained.load_weights
    monkeypatch.setattr(loop.pretrained, "load_weights", lambda m, p: calls.append(p) or real(m, p))
    config.training.init_from = path
    config.training.max_steps = 1
    lr = config.training.learning_rate
    config.training.learning_rate = 1e-30  # one step that cannot move float32 weights of this size
    workdir = str(tmp_path / "run")
    loop.train(config, workdir, sources.RandomFeatureSource(16))
    restored = Supernet(config)
    restored.restore(workdir)
    model = restored.model
    for v in model.trainable_variables:
        np.testing.assert_array_equal(v.numpy(), shipped[v.name].astype(np.float32))
    assert calls == [path]
    # Resume: a checkpoint exists, so its weights win and the bundle is not read again.
    config.training.max_steps, config.training.learning_rate = 2, lr
    metrics = loop.train(config, workdir, sources.RandomFeatureSource(16))
    assert metrics["restored_from"] and calls == [path]


def test_bundle_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pretrained.check_bundle(str(tmp_path / "nowhere"))
    config = tiny_config("omni")
    path = make_bundle(str(tmp_path), config)
    other = tiny_config("omni")
    other.model.d_model = 48
    with pytest.raises(ValueError, match="do not fit this model"):
        pretrained.load_weights(build_model(other.model), path)
    os.remove(os.path.join(path, "bundle.json"))
    with pytest.raises(FileNotFoundError, match="bundle.json"):
        pretrained.check_bundle(path)


def test_use_shipped_takes_the_bundle_tokenizer_cmvn_and_model(tmp_path):
    config = tiny_config("omni")
    bundle_config = tiny_config("omni")
    bundle_config.model.num_layers = 2
    path = make_bundle(str(tmp_path), bundle_config)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (data / name).write_text(f"{name}\n")
    (data / "spm.model").write_bytes(b"own")
    out = str(tmp_path / "out")
    c, shipped_dir = e2e.use_shipped(Stages(out, log=lambda s: None), out, config, str(data), path)
    assert c.model.num_layers == 2 and c.training.init_from == path
    assert c.variants == ("finetune", "smoke") and config.variants == ("smoke",)  # the finetune schedule
    assert c.training.learning_rate == 2e-3 and not c.sparsity.dense_warmup and config.sparsity.dense_warmup
    assert c.paths.manifest_dir == shipped_dir and not c.paths.train_manifest  # <manifest_dir>/train.tsv
    assert open(os.path.join(shipped_dir, "spm.model"), "rb").read() == b"spm"
    assert json.load(open(os.path.join(shipped_dir, "cmvn.json"))) == {"mean": [], "std": []}
    assert open(os.path.join(shipped_dir, "test.tsv")).read() == "test.tsv\n"
    with pytest.raises(FileNotFoundError, match="missing_bundle"):
        e2e.use_shipped(Stages(out, log=lambda s: None), out, config, str(data),
                        str(tmp_path / "missing_bundle"))


def test_shipped_config_adds_the_finetune_variant_once_and_keeps_explicit_fields(tmp_path):
    from omni_tf.configs import experiment

    path = make_bundle(str(tmp_path), tiny_config("omni"))
    demo = experiment.get_config("tiny,demo")
    c, got_path, info = e2e.shipped_config(demo, path)
    assert got_path == path and info["name"] == "smoke"
    want = experiment.get_config("tiny,demo,finetune")
    assert c.training.to_dict() == {**want.training.to_dict(), "init_from": path}
    assert c.sparsity.to_dict() == want.sparsity.to_dict()  # ramp 50-1250 of 2500, no dense warm-up
    assert c.model.d_model == 32 and demo.model.d_model != 32  # the bundle's model; the input unchanged
    named = experiment.get_config("tiny,demo,finetune")  # --config=...:tiny,demo,finetune
    named.training.learning_rate = 5e-4  # --config.training.learning_rate=5e-4
    again, _, _ = e2e.shipped_config(named, path)
    assert again.training.learning_rate == 5e-4 and again.variants == ("demo", "finetune")
    overridden = experiment.get_config("tiny,demo")
    overridden.training.warmup_steps = 10  # given explicitly: kept when the variant is added
    assert e2e.shipped_config(overridden, path)[0].training.warmup_steps == 10


def test_demo_shipped_init_adds_the_tier_sandwich_variant_scratch_does_not(tmp_path):
    from omni_tf.configs import experiment

    path = make_bundle(str(tmp_path), tiny_config("omni"))
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (data / name).write_text(f"{name}\n")
    out = str(tmp_path / "out")
    stages = Stages(out, log=lambda s: None)

    def initial(config, init="shipped", keep=()):
        return e2e.initial_config(stages, out, config, str(data), init, path, keep)[0]

    c = initial(experiment.get_config("tiny,demo"))  # no --config.* on the command line
    assert c.variants == ("demo", "finetune", "tier_sandwich") and c.training.init_from == path
    assert (c.sparsity.sampler, c.sparsity.distill_weight, c.sparsity.distill_mode) == ("tiers", 0.5, "mix")
    given = experiment.get_config("tiny,demo")
    given.sparsity.sampler = "uniform"  # the demo's default value: replaced unless named in keep
    assert initial(given).sparsity.sampler == "tiers"
    given.training.learning_rate = 3e-3  # the demo's own rate, given explicitly: finetune keeps it
    c = initial(given, keep=("sparsity.sampler", "training.learning_rate"))
    assert (c.sparsity.sampler, c.sparsity.distill_weight, c.training.learning_rate) == ("uniform", 0.5, 3e-3)
    c = initial(experiment.get_config("tiny,demo"), init="scratch")
    assert c.variants == ("demo",) and c.sparsity.sampler == "uniform" and not c.training.init_from
    with pytest.raises(ValueError, match="init must be scratch or shipped, got 'warm'"):
        initial(experiment.get_config("tiny,demo"), init="warm")


def test_config_overrides_lists_the_command_line_config_fields():
    from absl import flags as absl_flags
    from ml_collections import config_flags

    from omni_tf.configs import experiment

    argv = ["prog", "--config.sparsity.sampler=uniform", "--config.training.learning_rate=0.003"]
    fv = absl_flags.FlagValues()
    config_flags.DEFINE_config_file("config", f"{experiment.__file__}:tiny,demo", flag_values=fv,
                                    sys_argv=argv)
    fv(argv)
    assert sorted(e2e.config_overrides(fv)) == ["sparsity.sampler", "training.learning_rate"]
    c, path, _ = e2e.shipped_config(fv.config, "demo_tiny", e2e.config_overrides(fv))
    assert (c.training.learning_rate, c.sparsity.sampler, c.training.init_from) == (3e-3, "uniform", path)
    bare = absl_flags.FlagValues()
    config_flags.DEFINE_config_file("config", f"{experiment.__file__}:tiny,demo", flag_values=bare,
                                    sys_argv=["prog"])
    bare(["prog"])
    assert e2e.config_overrides(bare) == ()
    assert e2e.shipped_config(bare.config, "demo_tiny")[0].training.learning_rate == 2e-3  # finetune's


@pytest.mark.parametrize("field", ["spm_model", "cmvn"])
def test_use_shipped_refuses_a_user_spm_or_cmvn_the_bundle_replaces(tmp_path, field):
    config = tiny_config("omni")
    config.paths[field] = str(tmp_path / "mine")
    path = make_bundle(str(tmp_path), tiny_config("omni"))
    (tmp_path / "data").mkdir()
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match=rf"--init=shipped's data copy .*data_shipped.* conflicts with "
                                         rf"--config\.paths\.{field}="):
        e2e.use_shipped(Stages(out, log=lambda s: None), out, config, str(tmp_path / "data"), path)
    assert not os.path.exists(os.path.join(out, "data_shipped"))  # refused before copying anything


def test_check_data_files_accepts_only_the_bundle_bytes_naming_both_files(tmp_path):
    path = make_bundle(str(tmp_path), tiny_config("omni"))
    own = tmp_path / "own"
    own.mkdir()
    spm, cmvn = own / "spm.model", own / "cmvn.json"
    spm.write_bytes(b"spm")  # the bundle's bytes at another path: fine
    cmvn.write_text('{"mean": [], "std": []}')
    assert pretrained.foreign_data_files(path, str(spm), str(cmvn)) == []
    pretrained.check_data_files(path, str(spm), str(cmvn))
    spm.write_bytes(b"demo corpus spm")
    with pytest.raises(ValueError, match=rf"{spm} differs from the bundle's {path}/spm\.model \(the label"):
        pretrained.check_data_files(path, str(spm), str(cmvn))
    spm.write_bytes(b"spm")
    cmvn.write_text('{"mean": [1.0], "std": [2.0]}')
    with pytest.raises(ValueError, match=rf"{cmvn} differs from the bundle's {path}/cmvn\.json \(the feat"):
        pretrained.check_data_files(path, str(spm), str(cmvn))
    assert pretrained.foreign_data_files(path, str(own / "nope.model"), str(cmvn))[0].startswith(
        f"{own / 'nope.model'} is missing, not the bundle's {path}/spm.model")
    os.remove(os.path.join(path, "spm.model"))  # a bundle without its tokenizer: not a silent run
    with pytest.raises(FileNotFoundError, match=r"lacks \['spm.model'\]"):
        pretrained.check_data_files(path, str(spm), str(cmvn))


def _prepared_dir(directory, texts, cmvn_mean: float) -> tuple[str, str]:
    """A data dir with a train manifest (rows never read: the tests' sources make random batches), a
    16-piece SentencePiece model trained on ``texts`` and an 80-dim CMVN; returns (spm.model, cmvn.json)."""
    from omni_tf.data.librispeech import write_manifest
    from omni_tf.text.tokenizer import Tokenizer

    os.makedirs(directory, exist_ok=True)
    row = {"id": "1-1-0000", "path": "/x.flac", "num_samples": 16000, "sample_rate": 16000, "duration_s": 1.0,
           "speaker": "1", "text": texts[0]}
    write_manifest([row], os.path.join(directory, "train.tsv"))
    Tokenizer.train(texts, os.path.join(directory, "spm"), 16, hard_vocab_limit=False)
    with open(os.path.join(directory, "cmvn.json"), "w") as f:
        json.dump({"mean": [cmvn_mean] * 80, "std": [1.0] * 80}, f)
    return os.path.join(directory, "spm.model"), os.path.join(directory, "cmvn.json")


class _RandomBatchesManifest(sources.ManifestSource):
    """A ManifestSource (its spm/cmvn resolved and loaded from config.paths) serving random batches."""

    def dataset(self, epoch, skip_batches=0):
        return sources.RandomFeatureSource(16).dataset(epoch, skip_batches)


def test_init_from_trains_only_with_the_bundle_spm_and_cmvn(tmp_path):
    words = ["abc bad cab dab", "bed dead bead", "ace face dace", "cede bade abed"]
    bundle_files = _prepared_dir(str(tmp_path / "pretrain_data"), words * 5, 0.0)
    config = tiny_config("dense")
    path = make_bundle(str(tmp_path), config, *bundle_files)
    demo_spm, demo_cmvn = _prepared_dir(str(tmp_path / "demo_data"), words[::-1] * 3, 0.5)
    assert open(demo_spm, "rb").read() != open(bundle_files[0], "rb").read()  # another tokenizer, same size
    config.training.init_from, config.training.max_steps = path, 1
    config.paths.manifest_dir = str(tmp_path / "demo_data")
    workdir = str(tmp_path / "run")
    source = _RandomBatchesManifest(config)
    assert (source.spm_path, source.cmvn_path) == (demo_spm, demo_cmvn)
    with pytest.raises(ValueError, match=rf"init_from.*{demo_spm} differs from the bundle's {path}/spm\.model"
                                         rf".*{demo_cmvn} differs from the bundle's {path}/cmvn\.json"):
        loop.train(config, workdir, source)
    assert not os.path.exists(os.path.join(workdir, "ckpt"))  # refused before any step
    config.paths.spm_model = os.path.join(path, "spm.model")
    config.paths.cmvn = os.path.join(path, "cmvn.json")
    source = _RandomBatchesManifest(config)
    assert (source.spm_path, source.cmvn_path) == (config.paths.spm_model, config.paths.cmvn)
    assert loop.train(config, workdir, source)["step"] == 1  # the bundle's own files: trains


def test_init_from_with_another_vocabulary_is_an_error_not_a_run(tmp_path):
    path = make_bundle(str(tmp_path), tiny_config("dense"))
    config = tiny_config("dense")
    config.model.vocab_size = 20  # explicitly not the bundle's 16
    config.training.init_from, config.training.max_steps = path, 1
    with pytest.raises(ValueError, match=rf"shipped weights in {path} do not fit this model"):
        loop.train(config, str(tmp_path / "run"), sources.RandomFeatureSource(20))


def test_lineage_chains_a_parent_trained_in_stages():
    # demo_tiny's bundle.json records its two stages' steps as a list; a continued bundle adds its own
    parent = {"name": "demo_tiny", "steps": [6000, 16454], "cpu_hours": 2.49, "command": ["s1", "s2"]}
    info = pretrained.lineage("/b/demo_tiny", parent, cpu_s=1800.0, steps=1000)
    assert info["total_steps"] == 6000 + 16454 + 1000
    assert info["cpu_hours"] == 2.99 and info["run_cpu_hours"] == 0.5
    assert info["parent"] == {"name": "demo_tiny", "path": "demo_tiny", "command": ["s1", "s2"],
                              "cpu_hours": 2.49, "steps": [6000, 16454], "parent": None}
    child = {**parent, **info, "steps": 1000}  # a grandchild counts the whole chain
    assert pretrained.lineage("/b/c", child, 0.0, 5)["total_steps"] == 6000 + 16454 + 1000 + 5
    assert pretrained.chain_steps({"steps": 7}) == 7 and pretrained.chain_steps({}) == 0


def test_bundle_config_names_no_path_of_the_training_machine(tmp_path):
    config = tiny_config()
    config.paths.manifest_dir = str(tmp_path / "data")
    config.paths.spm_model = str(tmp_path / "data" / "spm.model")
    config.training.init_from = str(tmp_path / "parent")
    path = make_bundle(str(tmp_path), config)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        written = json.load(f)
    assert set(written["paths"].values()) == {""} and written["training"]["init_from"] == ""
    assert str(tmp_path) not in json.dumps(written)
    assert written["model"] == json.loads(config.model.to_json())  # the model config is kept whole
    assert config.paths.manifest_dir == str(tmp_path / "data")  # the caller's config is not changed


def test_lineage_names_no_path_of_the_writing_machine(tmp_path, monkeypatch):
    parent = {"name": "demo_tiny", "steps": 10}
    shipped = pretrained.bundle_dir("demo_tiny")  # the checkout's own copy, wherever the checkout is
    want = "omni_tf/resources/pretrained/demo_tiny"
    assert pretrained.lineage(shipped, parent, 0.0, 1)["parent"]["path"] == want
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.dirname(shipped), tmp_path / "link")  # another spelling of the same folder
    assert pretrained.bundle_reference("link/demo_tiny/") == want
    assert pretrained.lineage(str(tmp_path / "runs" / "b1"), parent, 0.0, 1)["parent"]["path"] == "b1"
    assert pretrained.bundle_reference("runs/b1/") == "b1"


def test_a_bundle_is_not_written_over_a_folder_its_writer_did_not_write(tmp_path):
    record = str(tmp_path / "out" / "bundle_target.json")
    shipped = pretrained.bundle_dir("demo_tiny_extra")
    with pytest.raises(FileExistsError, match=rf"written to {shipped}, which already holds a bundle"):
        pretrained.check_bundle_target(shipped, record, overwrite=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match=r"other, which already holds files"):
        pretrained.check_bundle_target(str(tmp_path / "other"), record, overwrite=False)
    pretrained.check_bundle_target(str(tmp_path / "other"), record, overwrite=True)
    pretrained.check_bundle_target(str(tmp_path / "new"), record, overwrite=False)  # absent: fine
    (tmp_path / "empty").mkdir()
    pretrained.check_bundle_target(str(tmp_path / "empty"), record, overwrite=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "bundle_target.json").write_text(json.dumps({"bundle_dir": str(tmp_path / "other")}))
    pretrained.check_bundle_target(str(tmp_path / "other") + "/", record, overwrite=False)  # its own: a rerun
    with pytest.raises(FileExistsError, match="demo_tiny_extra"):
        pretrained.check_bundle_target(shipped, record, overwrite=False)
