"""Writes the espeak-ng synthetic corpus in LibriSpeech layout (see omni_tf/data/synthetic.py).

Usage:
  python -m recipes.synthetic.make_corpus --out_dir=/tmp/synth --num_utterances=1000 --seed=0
  python -m recipes.synthetic.make_corpus --out_dir=/tmp/synth --hours=2 --dev_fraction=0.05 \
      --test_fraction=0.05 --num_workers=2

Re-running with the same flags reuses the corpus (``corpus.json`` records them), or resumes it when the
earlier run was interrupted (kill -9 included: the FLAC files already written are kept); different flags on an
existing corpus need ``--overwrite``. One run per ``--out_dir`` at a time (a lock).
"""
from absl import app, flags

from omni_tf import fileio
from omni_tf.data import synthetic

_DEFAULT = synthetic.CorpusSpec()
FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Output directory (gets train/ dev/ test/, SPEAKERS.TXT, corpus.json).")
flags.DEFINE_integer("num_utterances", _DEFAULT.num_utterances,
                     "Size of the generated corpus: utterances over all splits.")
flags.DEFINE_float("hours", _DEFAULT.hours, "If > 0: about this many hours in total instead of a count.")
flags.DEFINE_integer("seed", _DEFAULT.seed, "Seed; the same flags give the same files.")
flags.DEFINE_float("dev_fraction", _DEFAULT.dev_fraction, "Share of utterances (and speakers) for dev.")
flags.DEFINE_float("test_fraction", _DEFAULT.test_fraction, "Share of utterances (and speakers) for test.")
flags.DEFINE_integer("min_speed", _DEFAULT.min_speed, "Lowest speaking rate, words per minute.")
flags.DEFINE_integer("max_speed", _DEFAULT.max_speed, "Highest speaking rate, words per minute.")
flags.DEFINE_integer("min_pitch", _DEFAULT.min_pitch, "Lowest espeak-ng pitch (0-99).")
flags.DEFINE_integer("max_pitch", _DEFAULT.max_pitch, "Highest espeak-ng pitch (0-99).")
flags.DEFINE_integer("num_workers", 2, "Parallel espeak-ng workers (does not change the output).")
flags.DEFINE_bool("overwrite", False, "Replace an existing corpus made with other flags.")
flags.mark_flag_as_required("out_dir")


def spec_from_flags() -> synthetic.CorpusSpec:
    return synthetic.CorpusSpec(
        num_utterances=FLAGS.num_utterances, hours=FLAGS.hours, seed=FLAGS.seed,
        dev_fraction=FLAGS.dev_fraction, test_fraction=FLAGS.test_fraction, min_speed=FLAGS.min_speed,
        max_speed=FLAGS.max_speed, min_pitch=FLAGS.min_pitch, max_pitch=FLAGS.max_pitch)


def main(argv: list[str]) -> None:
    del argv
    try:
        synthetic.make_corpus(FLAGS.out_dir, spec_from_flags(), num_workers=FLAGS.num_workers,
                              overwrite=FLAGS.overwrite)
    except (FileExistsError, fileio.DirLocked) as e:
        raise SystemExit(f"make_corpus: {e}") from e


if __name__ == "__main__":
    app.run(main)
