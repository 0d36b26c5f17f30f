"""omni_tf/fileio.py: atomic files and folders (full disk, kill -9), completion records, locks, safe names."""
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap

import pytest

from omni_tf import fileio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _FullDisk:
    """A file stand-in for ``fileio._open`` that raises ENOSPC once ``limit`` bytes were written to it."""

    def __init__(self, real_open, limit):
        self.real_open, self.limit = real_open, limit

    def __call__(self, path, mode="r", **kw):
        f = self.real_open(path, mode, **kw)
        limit, written = self.limit, [0]
        real_write = f.write

        def write(data):
            if written[0] + len(data) > limit:
                real_write(data[: max(limit - written[0], 0)])
                f.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written[0] += len(data)
            return real_write(data)

        f.write = write
        return f


def _leftovers(directory):
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n or ".build-" in n or ".old-" in n)


def test_full_disk_mid_file_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old model")
    monkeypatch.setattr(fileio, "_open", _FullDisk(open, limit=3 << 20))
    with pytest.raises(OSError) as e:
        fileio.write_bytes(str(path), b"x" * (5 << 20), chunk=1 << 20)
    assert e.value.errno == errno.ENOSPC and str(path) in str(e.value)
    assert path.read_bytes() == b"old model" and _leftovers(tmp_path) == []


def test_full_disk_in_evaluation_write_table_leaves_the_old_file_or_none(tmp_path, monkeypatch):
    from omni_tf.training import evaluation

    rows = [{"name": f"uniform_{i / 100:.2f}", "wer": i / 100} for i in range(50)]  # > 100 bytes
    (tmp_path / "eval_dev.json").write_text("old")
    monkeypatch.setattr(fileio, "_open", _FullDisk(open, limit=100))
    with pytest.raises(OSError) as e:
        evaluation.write_table(rows, str(tmp_path), "eval_dev", ["name", "wer"])
    assert e.value.errno == errno.ENOSPC and str(tmp_path / "eval_dev.json") in str(e.value)
    assert (tmp_path / "eval_dev.json").read_text() == "old" and not (tmp_path / "eval_dev.md").exists()
    with pytest.raises(OSError) as e:  # a small JSON is written whole, the long table fails
        evaluation.write_table(rows, str(tmp_path), "eval_dev", ["name", "wer"], full={"n": 1})
    assert str(tmp_path / "eval_dev.md") in str(e.value)
    assert json.loads((tmp_path / "eval_dev.json").read_text()) == {"n": 1}
    assert not (tmp_path / "eval_dev.md").exists() and _leftovers(tmp_path) == []


def _tier(tmp_path, content, tag):
    from tflite_export import bundle

    manifest = {"tier": "phone", "quantization": "float32", "series": "omni", "tag": tag}
    return bundle.write_tier(str(tmp_path / "tiers"), "phone", content, manifest, "#!/bin/sh\n")


def test_tier_folder_is_whole_or_old_on_full_disk(tmp_path, monkeypatch):
    from tflite_export import bundle

    tier = _tier(tmp_path, b"A" * 1000, "old")
    assert bundle.read_tier(tier)["tag"] == "old"
    monkeypatch.setattr(fileio, "_open", _FullDisk(open, limit=500))
    with pytest.raises(OSError) as e:
        _tier(tmp_path, b"B" * 2000, "new")
    assert e.value.errno == errno.ENOSPC and "model.tflite" in str(e.value)
    assert bundle.read_tier(tier)["tag"] == "old"  # the old tier, whole
    assert open(os.path.join(tier, "model.tflite"), "rb").read() == b"A" * 1000
    assert _leftovers(tmp_path / "tiers") == []
    with pytest.raises(OSError, match="model.tflite"):
        bundle.write_tier(str(tmp_path / "fresh"), "t", b"B" * 2000, {"tier": "t"}, "")
    assert os.listdir(tmp_path / "fresh") == []  # a fresh tier: nothing at all


def test_records_refuse_missing_incomplete_truncated_and_altered_files(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / "a.bin").write_bytes(b"12345")
    with pytest.raises(fileio.IncompleteOutput, match="COMPLETE.json: missing"):
        fileio.verify_record(str(d), "k")
    fileio.mark_incomplete(str(d), "k", {"x": 1})
    with pytest.raises(fileio.IncompleteOutput, match="incomplete"):
        fileio.verify_record(str(d), "k")
    with pytest.raises(fileio.IncompleteOutput, match="incomplete"):
        fileio.check_member(str(d / "a.bin"), "k")
    fileio.write_record(str(d), "k", {"x": 1}, ["a.bin"])
    assert fileio.verify_record(str(d), "k", {"x": 1})["files"]["a.bin"]["bytes"] == 5
    with pytest.raises(fileio.IncompleteOutput, match="spec"):
        fileio.verify_record(str(d), "k", {"x": 2})
    (d / "a.bin").write_bytes(b"123")
    with pytest.raises(fileio.IncompleteOutput, match=r"a\.bin: 3 bytes, its completion record says 5"):
        fileio.verify_record(str(d), "k")
    (d / "a.bin").write_bytes(b"54321")
    with pytest.raises(fileio.IncompleteOutput, match=r"a\.bin: content differs"):
        fileio.check_member(str(d / "a.bin"), "k")
    fileio.check_member(str(d / "unlisted.tsv"), "k")  # not part of the recorded output
    fileio.check_member(str(tmp_path / "no_record" / "x.tsv"), "k")  # a folder no command recorded


_KILL_TIER = """
import os, signal, sys
from omni_tf import fileio
from tflite_export import bundle
real_open = fileio._open
def killing_open(path, mode="r", **kw):
    f = real_open(path, mode, **kw)
    if "model.tflite" in path:
        real_write = f.write
        def write(data):
            real_write(data[: len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the model file
        f.write = write
    return f
fileio._open = killing_open
bundle.write_tier(sys.argv[1], "phone", b"N" * 3000, {"tier": "phone", "tag": "new"}, "")
"""


def _run(script, *args, timeout=120):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_kill_9_mid_export_leaves_the_old_tier_or_none(tmp_path):
    from tflite_export import bundle

    fresh = tmp_path / "fresh"
    done = _run(_KILL_TIER, str(fresh))
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not (fresh / "phone").exists()  # only a hidden build folder, never a half tier
    tier = _tier(tmp_path, b"O" * 3000, "old")
    done = _run(_KILL_TIER, str(tmp_path / "tiers"))
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert bundle.read_tier(tier)["tag"] == "old"
    _tier(tmp_path, b"M" * 10, "next")  # the next write cleans the killed build up
    assert _leftovers(tmp_path / "tiers") == [] and bundle.read_tier(tier)["tag"] == "next"


_HOLD = """
import sys, time
from omni_tf import fileio
with fileio.DirLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_lock_fails_fast_naming_the_holder_and_is_freed_by_kill_9(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "w")], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(fileio.DirLocked, match=rf'"pid": {holder.pid}.*"command".*"host"'):
            fileio.DirLock(str(tmp_path / "w")).acquire()
    finally:
        holder.kill()
        holder.wait()
    with fileio.DirLock(str(tmp_path / "w")) as lock:  # kill -9 released it
        assert json.loads(open(lock.path).read())["pid"] == os.getpid()
        with pytest.raises(fileio.DirLocked, match="this process"):
            fileio.DirLock(str(tmp_path / "w")).acquire()


@pytest.mark.parametrize("name", ["../../escaped", "..", ".", "a/b", "a b", "x;rm -rf ~", "", "$(id)"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ValueError, match="not a safe name"):
        fileio.check_name(name, "tier name")


def test_safe_names_and_shell_quoting():
    assert fileio.check_name("phone_0.7-int8") == "phone_0.7-int8"
    line = fileio.shell_join(["adb", "push", "a b/model.tflite", "$(id)"])
    assert shlex.split(line) == ["adb", "push", "a b/model.tflite", "$(id)"]


def test_export_and_demo_refuse_unsafe_tier_names(tmp_path):
    from recipes import end_to_end as e2e
    from tflite_export import bundle

    with pytest.raises(ValueError, match="escaped"):
        e2e.Options({"../../escaped": 0.5})
    with pytest.raises(ValueError, match="escaped"):
        bundle.write_tier(str(tmp_path), "../../escaped", b"x", {}, "")
    with pytest.raises(ValueError, match="escaped"):
        bundle.export_tier(None, "../../escaped", str(tmp_path), bundle.ParitySet([]))
    assert os.listdir(tmp_path) == []
