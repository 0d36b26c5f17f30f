"""omni_tf.data.ood (the out-of-domain test split) and CorpusSpec.within_train_of (the pretraining corpus):
what they may and may not share with the demo corpus, and that the OOD split is written and prepared."""
import os

import numpy as np
import pytest
import soundfile as sf

from omni_tf.data import ood, prepare, synthetic, text_source
from omni_tf.data.librispeech import read_manifest

DEMO = synthetic.CorpusSpec(num_utterances=8000, seed=0)


def test_ood_plan_shares_no_text_speaker_or_voice_range_with_training():
    spec = ood.OodSpec(num_utterances=60, seed=3, demo=DEMO)
    plan = ood.plan_ood(spec)
    pool = set(text_source.load_sentences())
    sentences, speakers = synthetic.split_pools(DEMO)
    train_ids = {s.id for s in speakers["train"]}
    assert len(plan) == 60 and len({p.utterance.text for p in plan}) == 60
    for p in plan:
        u = p.utterance
        assert u.text not in pool and u.split == ood.OOD_SPLIT
        assert u.speaker.id not in train_ids
        assert not DEMO.min_speed <= u.speed <= DEMO.max_speed
        assert not DEMO.min_pitch <= u.pitch <= DEMO.max_pitch
        assert set(u.text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
    assert sum(p.degraded for p in plan) == 30
    assert plan == ood.plan_ood(spec)  # deterministic


def test_ood_spec_rejects_ranges_inside_training():
    with pytest.raises(ValueError, match="outside the training ranges"):
        ood.OodSpec(demo=DEMO, fast_speeds=(200, 260))


def test_pretrain_corpus_uses_only_the_demo_train_pools():
    demo_sentences, demo_speakers = synthetic.split_pools(DEMO)
    spec = synthetic.CorpusSpec(num_utterances=400, seed=5, within_train_of=DEMO.seed)
    plan = synthetic.plan_corpus(spec)
    held_text = set(demo_sentences["dev"]) | set(demo_sentences["test"])
    held_ids = {s.id for s in demo_speakers["dev"] + demo_speakers["test"]}
    train_text, train_ids = set(demo_sentences["train"]), {s.id for s in demo_speakers["train"]}
    assert {u.split for u in plan} == {"train", "dev", "test"}
    for u in plan:
        assert u.text in train_text and u.text not in held_text
        assert u.speaker.id in train_ids and u.speaker.id not in held_ids
    assert "within_train_of" in spec.to_dict() and "within_train_of" not in DEMO.to_dict()


def test_ood_split_is_written_and_prepared(tmp_path):
    spec = ood.OodSpec(num_utterances=4, seed=1, demo=DEMO)
    meta = ood.make_ood_split(str(tmp_path / "corpus"), spec, log=lambda s: None)
    assert meta["counts"] == {"test_ood": 4} and meta["degraded"] == 2
    assert ood.make_ood_split(str(tmp_path / "corpus"), spec, log=lambda s: None) == meta  # reused
    prepare.run(str(tmp_path / "corpus"), str(tmp_path / "data"), splits=[ood.OOD_SPLIT], num_workers=1)
    rows = read_manifest(str(tmp_path / "data" / "test_ood.tsv"))
    plan = ood.plan_ood(spec)
    assert sorted(r["text"] for r in rows) == sorted(p.utterance.text for p in plan)
    for r in rows:
        audio, rate = sf.read(r["path"])
        assert rate == 16000 and audio.ndim == 1 and np.abs(audio).max() <= 1.0
    assert not os.path.exists(tmp_path / "data" / "cmvn.json")  # a test split never sets the CMVN


def test_could_generate_covers_the_templates_and_nothing_else():
    assert all(ood.could_generate(s) for s in ood.generate_sentences(400, seed=7))
    assert ood.could_generate("ANNA AND ANNA CARRIED A RED KETTLE NEAR THE MUSEUM")  # a superset
    assert not ood.could_generate("PLEASE OPEN THE KETTLE BEFORE THIRTEEN O'CLOCK")
    assert not ood.could_generate("PLEASE OPEN THE KETTLE")


def test_extra_pretraining_text_is_disjoint_from_demo_dev_test_and_ood():
    extra = text_source.load_extra_sentences()
    demo_sentences, _ = synthetic.split_pools(DEMO)
    held = set(demo_sentences["dev"]) | set(demo_sentences["test"])
    assert not held & set(extra)
    assert not any(ood.could_generate(s) for s in extra)
    spec = synthetic.CorpusSpec(num_utterances=400, seed=5, within_train_of=DEMO.seed, extra_train_text=True)
    pools, _ = synthetic.split_pools(spec)
    assert not held & set(pools["train"]) and not any(ood.could_generate(s) for s in pools["train"])
    assert len(pools["train"]) > len(extra)
    ood_text = {p.utterance.text for p in ood.plan_ood(ood.OodSpec(num_utterances=200, seed=0, demo=DEMO))}
    assert not ood_text & set(pools["train"])
