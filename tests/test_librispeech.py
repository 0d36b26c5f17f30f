"""Tests for omni_tf.data.librispeech: each bad-input kind reported with its file; manifests."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from omni_tf.data import librispeech as ls


def _flac(path, n=8000, rate=16000, channels=1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = np.random.default_rng(len(str(path))).uniform(-0.3, 0.3, (n, channels)).astype(np.float32)
    sf.write(str(path), x if channels > 1 else x[:, 0], rate, format="FLAC")


def _chapter(split_dir, spk, ch, lines, audio_ids, **flac_kw):
    d = os.path.join(split_dir, spk, ch)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{spk}-{ch}.trans.txt"), "w") as f:
        f.write("".join(line + "\n" for line in lines))
    for u in audio_ids:
        _flac(os.path.join(d, f"{u}.flac"), **flac_kw)
    return d


@pytest.fixture()
def corpus(tmp_path):
    """A split with 2 good utterances and one bad input of every kind."""
    split = str(tmp_path / "train")
    d = _chapter(split, "1", "10", [
        "1-10-0000 HELLO WORLD", "1-10-0001 IT'S  FINE", "1-10-0002 ", "1-10-0003 hello",
        "1-10-0004 NO AUDIO",
        "1-10-0005 CORRUPT", "1-10-0006 EMPTY", "1-10-0007 WRONG RATE", "1-10-0008 STEREO", "1-10-0009 SHORT",
        "1-10-0000 DUPLICATE LINE", "9-9-0001 WRONG PREFIX",
    ], ["1-10-0000", "1-10-0001", "1-10-0002", "1-10-0003", "1-10-0010"])
    with open(os.path.join(d, "1-10-0005.flac"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(3000))
    open(os.path.join(d, "1-10-0006.flac"), "wb").close()
    _flac(os.path.join(d, "1-10-0007.flac"), rate=8000)
    _flac(os.path.join(d, "1-10-0008.flac"), channels=2)
    _flac(os.path.join(d, "1-10-0009.flac"), n=3599)  # 1 sample below 0.225 s
    _flac(os.path.join(d, "2-20-0000.flac"))  # name does not match its directory
    open(os.path.join(d, "notes.txt"), "w").close()
    return split


def test_scan_reports_every_kind(corpus):
    scan = ls.scan_split(corpus, num_workers=2)
    assert [r["id"] for r in scan.rows] == ["1-10-0000", "1-10-0001"]
    r0 = scan.rows[0]
    assert r0["text"] == "HELLO WORLD" and r0["num_samples"] == 8000 and r0["sample_rate"] == 16000
    assert r0["duration_s"] == 0.5 and r0["speaker"] == "1" and os.path.isabs(r0["path"])
    assert scan.rows[1]["text"] == "IT'S FINE"  # whitespace collapsed
    by_kind = {}
    for p in scan.problems:
        by_kind.setdefault(p.kind, []).append(os.path.basename(p.path))
    assert by_kind == {
        "empty_transcript": ["1-10.trans.txt:3"],
        "bad_characters": ["1-10.trans.txt:4"],
        "missing_audio": ["1-10-0004.flac"],
        "corrupt": ["1-10-0005.flac"],
        "empty_file": ["1-10-0006.flac"],
        "sample_rate": ["1-10-0007.flac"],
        "channels": ["1-10-0008.flac"],
        "too_short": ["1-10-0009.flac"],
        "missing_transcript": ["1-10-0010.flac"],
        "duplicate_id": ["1-10.trans.txt:11"],
        "bad_name": ["1-10.trans.txt:12", "2-20-0000.flac"],
        "unexpected_file": ["notes.txt"],
    }
    assert scan.counts()["bad_name"] == 2 and scan.counts()["unreadable_dir"] == 0


def test_header_check_also_detects_corrupt(corpus):
    scan = ls.scan_split(corpus, check="header", num_workers=1)
    assert scan.counts()["corrupt"] == 1 and len(scan.rows) == 2


def test_min_duration_flag(corpus):
    scan = ls.scan_split(corpus, min_duration_s=0.6)
    assert scan.rows == [] and scan.counts()["too_short"] == 3


def test_unreadable_dir_by_injected_oserror(corpus, monkeypatch):
    # Tests run as root, which can list chmod-000 directories, so the OSError is injected at the listing seam.
    os.makedirs(os.path.join(corpus, "3", "30"))
    real = ls._scandir
    bad = os.path.join(corpus, "3", "30")

    def scandir(path):
        if os.path.abspath(path) == bad:
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(ls, "_scandir", scandir)
    scan = ls.scan_split(corpus)
    [p] = [p for p in scan.problems if p.kind == "unreadable_dir"]
    assert p.path == bad and "Permission denied" in p.reason
    assert len(scan.rows) == 2


def test_unreadable_split_dir_really_chmod(tmp_path):
    d = tmp_path / "dev"
    d.mkdir()
    os.chmod(d, 0)
    try:
        if os.geteuid() == 0:
            pytest.skip("root can list chmod-000 directories; covered by the injected-OSError test")
        scan = ls.scan_split(str(d))
        assert scan.counts()["unreadable_dir"] == 1
    finally:
        os.chmod(d, 0o755)


def test_duplicate_id_across_transcript_files(tmp_path):
    d = _chapter(str(tmp_path / "dev"), "1", "10", ["1-10-0000 A"], ["1-10-0000"])
    with open(os.path.join(d, "extra.trans.txt"), "w") as f:
        f.write("1-10-0000 B\n")
    scan = ls.scan_split(str(tmp_path / "dev"))
    assert [r["text"] for r in scan.rows] == ["A"]
    got = [(os.path.basename(p.path), p.kind) for p in scan.problems]
    assert got == [("extra.trans.txt", "duplicate_id")]


def test_manifest_and_report_round_trip(corpus, tmp_path):
    scan = ls.scan_split(corpus)
    out = str(tmp_path / "out")
    os.makedirs(out)
    ls.write_manifest(scan.rows, os.path.join(out, "train.tsv"))
    with open(os.path.join(out, "train.tsv")) as f:
        assert f.readline().rstrip("\n").split("\t") == list(ls.MANIFEST_COLUMNS)
    assert ls.read_manifest(os.path.join(out, "train.tsv")) == scan.rows
    jpath, tpath = ls.write_report(scan, out)
    assert jpath.endswith("train.report.json") and tpath.endswith("train.report.txt")
    with open(jpath) as f:
        rep = json.load(f)
    assert rep["usable"] == 2 and rep["bad"] == len(scan.problems) == sum(rep["counts"].values())
    assert set(rep["counts"]) == set(ls.ALL_KINDS)
    with open(tpath) as f:
        txt = f.read()
    assert "corrupt: 1" in txt and "1-10-0005.flac" in txt


def test_read_manifest_rejects_wrong_header(tmp_path):
    (tmp_path / "m.tsv").write_text("id\tpath\n")
    with pytest.raises(ValueError, match="m.tsv"):
        ls.read_manifest(str(tmp_path / "m.tsv"))


def test_find_splits(tmp_path, corpus):
    _chapter(str(tmp_path / "dev-clean"), "5", "50", ["5-50-0000 A"], ["5-50-0000"])
    (tmp_path / "not_a_split").mkdir()
    (tmp_path / "README.TXT").write_text("x")
    assert ls.find_splits(str(tmp_path)) == ["dev-clean", "train"]


def test_default_min_duration():
    assert ls.default_min_duration_s() == pytest.approx(0.225)


def _small_root(tmp_path):
    root = tmp_path / "corpus"
    ids = ["1-10-0000", "1-10-0001"]
    _chapter(str(root / "train"), "1", "10", [f"{u} HELLO" for u in ids], ids)
    d = _chapter(str(root / "dev"), "2", "20", ["2-20-0000 GOOD", "2-20-0001 BAD"], ["2-20-0000"])
    with open(os.path.join(d, "2-20-0001.flac"), "wb") as f:
        f.write(b"not a flac file")
    return str(root)


def test_prepare_writes_manifests_reports_cmvn(tmp_path, capsys):
    from omni_tf.data import features, prepare

    out = str(tmp_path / "out")
    scans = prepare.run(_small_root(tmp_path), out)
    assert sorted(os.listdir(out)) == [".lock", "COMPLETE.json", "cmvn.json", "dev.report.json",
                                       "dev.report.txt", "dev.tsv", "train.report.json", "train.report.txt",
                                       "train.tsv"]
    assert [r["id"] for r in ls.read_manifest(os.path.join(out, "dev.tsv"))] == ["2-20-0000"]
    assert scans["dev"].counts()["corrupt"] == 1
    mean, std = features.load_cmvn(os.path.join(out, "cmvn.json"))
    assert mean.shape == (80,) and np.all(std > 0)
    printed = capsys.readouterr().out
    assert "dev: 1 usable" in printed and "corrupt 1" in printed and "train: 2 usable" in printed
    with pytest.raises(prepare.PrepareError, match="2-20-0001.flac"):
        prepare.run(_small_root(tmp_path), out, strict=True)
    with pytest.raises(prepare.PrepareError, match="no usable"):
        prepare.run(_small_root(tmp_path), out, splits=["dev"], min_duration_s=5.0)
    with pytest.raises(prepare.PrepareError, match="not found"):
        prepare.run(_small_root(tmp_path), out, splits=["test"])


def test_prepare_train_split_choice():
    from omni_tf.data import prepare

    assert prepare.train_splits_of(["dev", "test", "train"], []) == ["train"]
    assert prepare.train_splits_of(["dev-clean", "train-clean-100", "train-other-500"], []) == [
        "train-clean-100", "train-other-500"]
    assert prepare.train_splits_of(["a", "b"], ["b"]) == ["b"]
    with pytest.raises(prepare.PrepareError, match="c"):
        prepare.train_splits_of(["a", "b"], ["c"])
    assert prepare.default_min_duration_s() == pytest.approx(0.225)


def test_prepare_cli_strict_exit_code(tmp_path):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "recipes.librispeech.prepare", f"--librispeech_dir={_small_root(tmp_path)}",
           f"--out_dir={tmp_path / 'out'}", "--strict", "--splits=dev"]
    res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "2-20-0001.flac" in res.stderr and "corrupt" in res.stderr
    assert "dev: 1 usable" in res.stdout and os.path.exists(tmp_path / "out" / "dev.report.json")


def test_undecodable_transcript_file(tmp_path):
    d = _chapter(str(tmp_path / "dev"), "1", "10", [], ["1-10-0000"])
    with open(os.path.join(d, "1-10.trans.txt"), "wb") as f:
        f.write(b"1-10-0000 \xff\xfe BAD BYTES\n")
    scan = ls.scan_split(str(tmp_path / "dev"))
    kinds = sorted((p.kind, os.path.basename(p.path)) for p in scan.problems)
    assert kinds == [("missing_transcript", "1-10-0000.flac"), ("unreadable_file", "1-10.trans.txt")]


def test_tab_separated_transcript_line(tmp_path):
    """``<id>\\t<words>`` is the same line as ``<id> <words>`` (was: missing audio '<id>\\t<word>.flac' plus
    missing transcript)."""
    split = str(tmp_path / "train")
    _chapter(split, "1", "10", ["1-10-0000\tHELLO WORLD", "1-10-0001 \t IT'S\tFINE  "],
             ["1-10-0000", "1-10-0001"])
    scan = ls.scan_split(split)
    assert scan.problems == []
    assert [(r["id"], r["text"]) for r in scan.rows] == [("1-10-0000", "HELLO WORLD"),
                                                         ("1-10-0001", "IT'S FINE")]
    assert ls.parse_transcript_line("  \t ") == ("", "")
    assert ls.parse_transcript_line("1-10-0002") == ("1-10-0002", "")


def test_tsv_stays_valid_when_a_path_holds_a_tab(tmp_path):
    """A directory name with a tab (and a backslash): manifest and report lines keep their columns."""
    split = str(tmp_path / "odd\tdir\\x" / "train")
    _chapter(split, "1", "10", ["1-10-0000 HELLO", "1-10-0001 NO AUDIO"], ["1-10-0000"])
    scan = ls.scan_split(split)
    assert len(scan.rows) == 1 and "\t" in scan.rows[0]["path"]
    out = tmp_path / "out"
    out.mkdir()
    ls.write_manifest(scan.rows, str(out / "train.tsv"))
    with open(out / "train.tsv") as f:
        assert [len(line.split("\t")) - line.count("\\\t") for line in f] == [7, 7]
    assert ls.read_manifest(str(out / "train.tsv")) == scan.rows
    _, txt = ls.write_report(scan, str(out))
    with open(txt, newline="") as f:
        lines = f.read().splitlines()[2:]  # after the summary and the per-kind count
        problems = list(ls.tsv_reader(lines))
    assert problems == [["missing_audio", os.path.join(split, "1", "10", "1-10-0001.flac"),
                         "transcript line '1-10-0001' has no audio file"]]


def test_prepare_convert_audio_reports_each_file(tmp_path, capsys):
    """Without --convert_audio a 22.05 kHz and a stereo file are bad inputs; with it they are usable and each
    is listed as converted (report JSON and TXT, summary line)."""
    from omni_tf.data import prepare

    root = tmp_path / "corpus"
    d = _chapter(str(root / "train"), "1", "10", ["1-10-0000 A", "1-10-0001 B", "1-10-0002 C"], ["1-10-0000"])
    _flac(os.path.join(d, "1-10-0001.flac"), n=11025, rate=22050)
    _flac(os.path.join(d, "1-10-0002.flac"), channels=2)
    kinds = {p.kind for p in prepare.run(str(root), str(tmp_path / "a"))["train"].problems}
    assert kinds == {"sample_rate", "channels"}
    scan = prepare.run(str(root), str(tmp_path / "b"), convert_audio=True)["train"]
    assert scan.problems == [] and len(scan.rows) == 3
    assert [(os.path.basename(p), c.split(" (")[0]) for p, c in scan.converted] == [
        ("1-10-0001.flac", "22050 Hz -> 16000 Hz"), ("1-10-0002.flac", "2 channels -> mono")]
    assert scan.rows[1]["sample_rate"] == 22050 and scan.rows[1]["num_samples"] == 11025  # the file as is
    with open(tmp_path / "b" / "train.report.json") as f:
        assert [c["path"] for c in json.load(f)["converted"]] == [p for p, _ in scan.converted]
    assert "converted to 16 kHz mono: 2" in capsys.readouterr().out
    assert (tmp_path / "b" / "train.report.txt").read_text().count("converted\t") == 2


def test_prepare_rejects_empty_and_100_sample_files(tmp_path):
    split = str(tmp_path / "train")
    d = _chapter(split, "1", "10", ["1-10-0000 A", "1-10-0001 B"], [])
    sf.write(os.path.join(d, "1-10-0000.flac"), np.zeros(0, np.float32), 16000)
    sf.write(os.path.join(d, "1-10-0001.flac"), np.zeros(100, np.float32), 16000)
    kinds = {os.path.basename(p.path): p.kind for p in ls.scan_split(split).problems}
    assert kinds == {"1-10-0000.flac": "empty_file", "1-10-0001.flac": "too_short"}


def _float_wav_named_flac(path, poison: float, at: int, n: int = 8000):
    x = np.random.default_rng(1).uniform(-0.3, 0.3, n).astype(np.float32)
    x[at] = poison
    sf.write(str(path), x, 16000, format="WAV", subtype="FLOAT")


@pytest.mark.parametrize("check", ["full", "header"])
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), 3e38])
def test_prepare_reports_non_finite_samples_and_features(tmp_path, capsys, check, poison):
    from omni_tf.data import features, prepare

    ids = ["1-10-0000", "1-10-0001", "1-10-0002"]
    d = _chapter(str(tmp_path / "raw" / "train"), "1", "10", [f"{u} HELLO" for u in ids], ids[:2])
    # Mid-stream: check=header decodes only the last block, so the CMVN pass must catch it from the features.
    _float_wav_named_flac(os.path.join(d, "1-10-0002.flac"), poison, at=1234)
    out = str(tmp_path / "out")
    scans = prepare.run(str(tmp_path / "raw"), out, check=check)
    assert [r["id"] for r in ls.read_manifest(os.path.join(out, "train.tsv"))] == ids[:2]
    (problem,) = scans["train"].problems
    assert problem.kind == "non_finite" and problem.path.endswith("1-10-0002.flac")
    mean, std = features.load_cmvn(os.path.join(out, "cmvn.json"))
    assert np.isfinite(mean).all() and np.isfinite(std).all()
    assert "bad: non_finite 1" in capsys.readouterr().out
    report = json.load(open(os.path.join(out, "train.report.json")))
    assert report["counts"]["non_finite"] == 1


_KILLED_PREPARE = """
import os, signal, sys
from omni_tf.data import features, prepare
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 after the manifests, before cmvn.json
features.save_cmvn = killed
prepare.run(sys.argv[1], sys.argv[2])
"""


def _prepared_config(out):
    from omni_tf.configs import experiment

    c = experiment.get_config("tiny,smoke")
    with c.unlocked():
        c.paths.manifest_dir = out
    return c


def test_killed_prepare_is_refused_by_training_naming_the_file(tmp_path):
    import signal
    import subprocess
    import sys

    from omni_tf import fileio
    from omni_tf.data import prepare
    from omni_tf.training import sources

    out = str(tmp_path / "out")
    prepare.run(_small_root(tmp_path), out)
    with open(os.path.join(out, "spm.model"), "w") as f:
        f.write("stand-in")  # the check comes before the tokenizer is read
    prepare.check_prepared([os.path.join(out, "train.tsv"), os.path.join(out, "cmvn.json")])
    other = tmp_path / "other"  # another corpus prepared into the same folder, killed before its CMVN
    _chapter(str(other / "train"), "5", "50", ["5-50-0000 OTHER WORDS"], ["5-50-0000"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", _KILLED_PREPARE, str(other), out], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert "5-50-0000" in open(os.path.join(out, "train.tsv")).read()  # new manifest beside old cmvn.json
    with pytest.raises(fileio.IncompleteOutput, match=r"COMPLETE\.json.*incomplete"):
        sources.ManifestSource(_prepared_config(out))
    prepare.run(str(other), out)  # the same command again: whole, and no stale split or statistics
    assert sorted(n for n in os.listdir(out) if n.endswith(".tsv")) == ["train.tsv"]
    with open(os.path.join(out, "dev.tsv"), "w") as f:
        f.write("x")  # a file the record does not list is not part of the prepared set
    with open(os.path.join(out, "train.tsv"), "a") as f:
        f.write("5-50-0001\tother.flac\t1\t16000\t0.1\t5\tEDITED\n")
    with pytest.raises(fileio.IncompleteOutput, match=r"train\.tsv: \d+ bytes, its completion record"):
        sources.ManifestSource(_prepared_config(out))


def test_prepare_without_train_split_removes_the_old_cmvn(tmp_path):
    from omni_tf.data import prepare

    out = str(tmp_path / "out")
    prepare.run(_small_root(tmp_path), out)
    assert os.path.exists(os.path.join(out, "cmvn.json"))
    prepare.run(_small_root(tmp_path), out, splits=["dev"])
    assert not os.path.exists(os.path.join(out, "cmvn.json"))
    assert not os.path.exists(os.path.join(out, "train.tsv"))


def test_prepare_add_splits_keeps_the_prepared_set(tmp_path):
    """An extra split from another corpus (the demo's out-of-domain test) is added to a prepared folder: the
    other manifests and cmvn.json stay, unchanged, and the completion record lists them all."""
    from omni_tf import fileio
    from omni_tf.data import prepare

    out = str(tmp_path / "out")
    prepare.run(_small_root(tmp_path), out)
    before = {n: open(os.path.join(out, n), "rb").read() for n in ("train.tsv", "dev.tsv", "cmvn.json")}
    other = tmp_path / "other"
    _chapter(str(other / "test_ood"), "7", "70", ["7-70-0000 HELLO GOOD"], ["7-70-0000"])
    prepare.run(str(other), out, splits=["test_ood"], add_splits=True)
    for name, content in before.items():
        assert open(os.path.join(out, name), "rb").read() == content, name
    record = fileio.read_record(out)
    assert record["complete"]
    assert {"train.tsv", "dev.tsv", "cmvn.json", "test_ood.tsv"} <= set(record["files"])
    prepare.check_prepared([os.path.join(out, n) for n in ("train.tsv", "cmvn.json", "test_ood.tsv")])


def test_prepare_refuses_unsafe_split_names(tmp_path):
    from omni_tf.data import prepare

    root = tmp_path / "c"
    _chapter(str(root / "tr ain"), "1", "10", ["1-10-0000 HELLO"], ["1-10-0000"])
    with pytest.raises(prepare.PrepareError, match="not a safe name"):
        prepare.run(str(root), str(tmp_path / "out"))
