"""Trains the SentencePiece tokenizer on a manifest's transcripts (blank=0, unk=1; omni_tf/text/tokenizer.py).

Usage:
  python -m recipes.librispeech.train_spm --manifest=DIR/train.tsv --vocab_size=256 --model_type=unigram \
      --out_prefix=DIR/spm
writes DIR/spm.model and DIR/spm.vocab (each atomically: whole or the old file) and prints the vocabulary size
and mean tokens per utterance. A manifest of an unfinished or altered prepare (its folder's COMPLETE.json) is
refused.
"""
from absl import app, flags, logging

from omni_tf.data.librispeech import read_manifest
from omni_tf.data.prepare import check_prepared
from omni_tf.text.tokenizer import MODEL_TYPES, train_from_manifest

FLAGS = flags.FLAGS
flags.DEFINE_string("manifest", None, "Manifest TSV (id, path, ..., text) whose texts train the model.")
flags.DEFINE_integer("vocab_size", 256, "Pieces including <blk> and <unk>.")
flags.DEFINE_enum("model_type", "unigram", list(MODEL_TYPES), "SentencePiece model type.")
flags.DEFINE_string("out_prefix", None, "Writes <out_prefix>.model and <out_prefix>.vocab.")
flags.DEFINE_bool("hard_vocab_limit", True, "False lets SentencePiece stop below --vocab_size on small data.")
flags.mark_flags_as_required(["manifest", "out_prefix"])


def main(argv: list[str]) -> None:
    del argv
    check_prepared([FLAGS.manifest])
    tok = train_from_manifest(FLAGS.manifest, FLAGS.out_prefix, FLAGS.vocab_size, FLAGS.model_type,
                              FLAGS.hard_vocab_limit)
    texts = [row["text"] for row in read_manifest(FLAGS.manifest)]
    mean_len = sum(len(tok.encode(t)) for t in texts) / len(texts)
    logging.info("wrote %s.model (%d pieces, %s); %.1f tokens per utterance over %d texts",
                 FLAGS.out_prefix, tok.vocab_size, FLAGS.model_type, mean_len, len(texts))
    print(f"{FLAGS.out_prefix}.model: {tok.vocab_size} pieces, {mean_len:.1f} tokens/utterance")


if __name__ == "__main__":
    app.run(main)
