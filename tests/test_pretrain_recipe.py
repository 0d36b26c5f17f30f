"""recipes/synthetic/pretrain.py --pretrained / --extra_text: a smoke run continuing a tiny bundle; --name and
the refusal to write over a folder the run did not write."""
import filecmp
import json
import os
import subprocess
import sys

from omni_tf.text.tokenizer import Tokenizer
from tests.training_helpers import make_bundle, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parent_bundle(directory) -> str:
    """A 16-piece tiny dense bundle with a real SentencePiece model and an 80-dim CMVN."""
    texts = ["THE CAT SAT ON THE BED", "A HOT DOG", "SHE NOTED THE DATE", "THE BEST SEA BOAT"] * 5
    Tokenizer.train(texts, os.path.join(directory, "parent_spm"), 16, hard_vocab_limit=False)
    cmvn = os.path.join(directory, "parent_cmvn.json")
    with open(cmvn, "w") as f:
        json.dump({"mean": [0.25] * 80, "std": [1.0] * 80}, f)
    path = make_bundle(directory, tiny_config("dense"), os.path.join(directory, "parent_spm.model"), cmvn)
    info_path = os.path.join(path, "bundle.json")
    with open(info_path) as f:
        info = json.load(f)
    info.update(command="python -m recipes.synthetic.pretrain --out=/somewhere", cpu_hours=1.5, steps=700)
    with open(info_path, "w") as f:
        json.dump(info, f)
    return path


ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_pretrained_continues_a_bundle_with_its_spm_and_cmvn_and_chains_bundle_json(tmp_path):
    parent = _parent_bundle(str(tmp_path))
    out, child = tmp_path / "pt", tmp_path / "child"
    cmd = [sys.executable, "-m", "recipes.synthetic.pretrain", f"--out={out}", f"--pretrained={parent}",
           "--name=child", "--extra_text", "--num_utterances=24", "--eval_utterances=2", "--max_minutes=0",
           "--config=omni_tf/configs/experiment.py:tiny,smoke", "--config.training.max_steps=2",
           f"--bundle_dir={child}"]
    env = ENV
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    data = out / "data_shipped"
    for name in ("spm.model", "cmvn.json"):  # the parent's files, byte for byte; no spm trained here
        assert filecmp.cmp(data / name, os.path.join(parent, name), shallow=False)
        assert filecmp.cmp(child / name, os.path.join(parent, name), shallow=False)
    assert not (out / "data" / "spm.model").exists()
    corpus = json.loads((out / "corpus" / "corpus.json").read_text())
    assert corpus["spec"]["extra_train_text"] is True and corpus["spec"]["within_train_of"] == 0
    info = json.loads((child / "bundle.json").read_text())
    assert info["steps"] == 2 and info["total_steps"] == 702
    assert info["name"] == "child" and info["parent"]["steps"] == 700
    assert info["parent"]["path"] == "bundle"  # the parent folder's name: no path of this machine
    assert info["command"].startswith(
        "python -m recipes.synthetic.pretrain --out=P --pretrained=bundle --name=child --extra_text ")
    assert info["command"].endswith(" --bundle_dir=B") and str(tmp_path) not in json.dumps(info)
    assert info["parent"]["command"] == "python -m recipes.synthetic.pretrain --out=/somewhere"
    assert info["cpu_hours"] == round(1.5 + info["run_cpu_hours"], 3) and info["run_cpu_hours"] > 0
    config = json.loads((child / "config.json").read_text())
    # the run started from the parent (its workdir's config); the bundle's own config.json names no path of
    # this machine (write_bundle), its ancestry is bundle.json's "parent"
    trained = json.loads((out / "train" / "config.json").read_text())
    assert trained["training"]["init_from"] == parent and trained["training"]["mode"] == "dense"
    assert config["training"]["mode"] == "dense" and config["training"]["init_from"] == ""
    assert set(config["paths"].values()) == {""}
    assert "finetune" not in config["variants"] and config["model"]["vocab_size"] == 16
    # The same command with a larger step budget resumes from <out>/train (stages reused).
    second = subprocess.run([*cmd[:-2], "--config.training.max_steps=3", cmd[-1]], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = json.loads((out / "pretrain_runs.json").read_text())
    assert [r["step"] for r in runs] == [2, 3] and runs[1]["restored_from"]
    assert json.loads((child / "bundle.json").read_text())["total_steps"] == 703
    same = subprocess.run([*cmd[:-1], f"--bundle_dir={parent}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert same.returncode != 0 and "would be overwritten" in same.stderr
    other = subprocess.run([*cmd[:3], f"--out={tmp_path / 'pt2'}", *cmd[4:]], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)  # another run's bundle: refused
    assert other.returncode != 0 and f"written to {child}, which already holds a bundle" in other.stderr
    assert not (tmp_path / "pt2" / "corpus").exists()  # before any work


def test_name_is_required_and_a_shipped_bundle_is_not_replaced(tmp_path):
    cmd = [sys.executable, "-m", "recipes.synthetic.pretrain", f"--out={tmp_path / 'pt'}",
           "--num_utterances=24"]
    unnamed = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert unnamed.returncode != 0 and "--name" in unnamed.stderr
    shipped = os.path.join(ROOT, "omni_tf", "resources", "pretrained", "demo_tiny")
    before = os.stat(os.path.join(shipped, "weights.npz")).st_mtime_ns
    named = subprocess.run([*cmd, "--name=demo_tiny"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert named.returncode != 0
    assert f"written to {shipped}, which already holds a bundle" in named.stderr
    assert "--overwrite" in named.stderr
    assert os.stat(os.path.join(shipped, "weights.npz")).st_mtime_ns == before
    assert not (tmp_path / "pt" / "corpus").exists()
