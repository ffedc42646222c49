r"""Dataset tokenization for generator training: images -> ArrayRecord token shards.

    python -m jaxtok.tokenize --checkpoint CKPT_DIR --data folder:PATH --out DIR
    python -m jaxtok.tokenize --checkpoint titok:S-128 --data tfds:imagenet2012:train \
        --out gs-mounted/DIR --batch_size 256       # the same line on every pod worker

    from jaxtok import tokenize
    ds = tokenize.read("DIR")      # grain random-access source: ds[i] = {"ids", "index",
                                   #   "image_id"[, "label"]}

One set of shards per host, batches split over every local device with jaxtok.parallel's mesh
code, resumable after a crash (finished shards are kept, half-written ones never count). The
format is in `jaxtok.tokenize.records`, the work split and crash safety in `writer`.
"""
from jaxtok.tokenize.reader import TokenShards, read
from jaxtok.tokenize.records import EXAMPLE_VERSION, FORMAT_VERSION, decode_example, encode_example
from jaxtok.tokenize.writer import tokenize, tokenizer_fingerprint

__all__ = ["EXAMPLE_VERSION", "FORMAT_VERSION", "TokenShards", "decode_example",
           "encode_example", "read", "tokenize", "tokenizer_fingerprint"]
