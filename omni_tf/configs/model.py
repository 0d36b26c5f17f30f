"""Model presets: tiny (demo/CI), small, base, paper (Emformer scale).

Time units: ``chunk_ms`` / ``lookahead_ms`` are milliseconds of audio; with a 10 ms feature hop and 4x
subsampling one encoder frame is 40 ms, so chunk_ms=160 -> 4 encoder frames, lookahead_ms=40 -> 1 frame.
"""
import ml_collections


def _base_fields() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.num_mel_bins = 80
    c.subsampling_factor = 4
    c.d_model = 144
    c.num_layers = 6
    c.num_heads = 4
    c.ff_dim = 576
    c.conv_kernel = 15  # causal depthwise conv per block; 0 disables it (then attention has no position info)
    c.conv_pointwise = True  # full conv module (pointwise+GLU+depthwise+LN+pointwise); False: depthwise only
    c.dropout = 0.1
    c.chunk_ms = 160
    c.lookahead_ms = 40
    c.left_chunks = 4  # attention left context, in chunks
    c.vocab_size = 256
    c.pred_embed_dim = 256
    c.pred_hidden = 320
    c.pred_layers = 1
    c.joint_dim = 320
    c.prune_embeddings = False  # embeddings/biases/norms are not prunable unless set
    return c


def tiny() -> ml_collections.ConfigDict:
    """~3M params: the demo and CI model."""
    return _base_fields()


def small() -> ml_collections.ConfigDict:
    """~10M params."""
    c = _base_fields()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim = 256, 8, 4, 1024
    c.vocab_size, c.pred_hidden, c.joint_dim, c.pred_embed_dim = 512, 512, 512, 256
    return c


def base() -> ml_collections.ConfigDict:
    """~30M params."""
    c = _base_fields()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim = 384, 12, 6, 1536
    c.vocab_size, c.pred_hidden, c.joint_dim, c.pred_embed_dim, c.pred_layers = 1024, 640, 640, 512, 1
    return c


def paper() -> ml_collections.ConfigDict:
    """Emformer scale (~75M params): 20 layers, d_model 512, ff 2048, 8 heads, vocab 4096, 160/40 ms."""
    c = _base_fields()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim = 512, 20, 8, 2048
    c.vocab_size, c.pred_hidden, c.joint_dim, c.pred_embed_dim, c.pred_layers = 4096, 640, 640, 512, 2
    c.left_chunks = 8
    c.conv_pointwise = False  # depthwise-only conv keeps the Emformer budget
    return c


PRESETS = {"tiny": tiny, "small": small, "base": base, "paper": paper}


def get_preset(name: str) -> ml_collections.ConfigDict:
    """Returns a fresh model ConfigDict for preset ``name``; raises ValueError naming the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
