"""A fast Hugging Face tokenizer (ids + character offsets) from a Mistral tekken JSON blob, tokenizing as ComfyUI does.

FLUX.2 dev's Mistral-3 24B encoder ships its tekken tokenizer inside the text-encoder file; ComfyUI 0.33 reads it
into ``tokenizer_data["tekken_model"]`` and builds a pure-Python byte-level BPE from it
(``comfy/text_encoders/bpe_tokenizer.py``, ``from_tekken_json``), which gives ids but no character offsets. Token
Focus needs offsets, so the same vocabulary is handed to the ``tokenizers`` library here, with ComfyUI's rules:

* ordinary token of rank r -> id r + ``default_num_special_tokens``; ranks from ``default_vocab_size`` minus that
  offset on are dropped (the model's embedding table has no row for them);
* merges rebuilt from the vocabulary: every split of a token into two tokens, ordered by the merged token's rank,
  then by the ranks of the two parts;
* special tokens (``special_tokens`` list, rank = id) are cut out of the text first, anywhere they occur;
* the text is split with the Llama-3 pattern ComfyUI applies to every tekken file (``LLAMA3_SPLIT``), not the file's
  own ``config.pattern`` (which splits digits one at a time): the ids the encoder receives are ComfyUI's.

Host-free: never imports ComfyUI. Built once per blob (keyed by its sha256): building takes seconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict

# comfy/text_encoders/bpe_tokenizer.py _LLAMA_PATTERN: the only split ComfyUI 0.33 accepts for a tekken blob
LLAMA3_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
CACHED_BLOBS = 2  # tokenizers kept in memory (one per distinct tekken blob seen)
_BUILT: OrderedDict[str, object] = OrderedDict()


class TekkenError(ValueError):
    """The blob is not a tekken tokenizer this module can rebuild (the message says what is missing)."""


def blob_bytes(blob) -> bytes:
    """The blob as bytes (ComfyUI keeps it as the raw bytes or the text of the JSON)."""
    if isinstance(blob, (bytes, bytearray, memoryview)):
        return bytes(blob)
    if isinstance(blob, str):
        return blob.encode("utf-8")
    raise TekkenError(f"a tekken blob is bytes or str, got {type(blob).__name__}")


def tekken_tokenizer(blob):
    """The fast tokenizer for this tekken blob, built on first use and cached by the blob's sha256."""
    data = blob_bytes(blob)
    digest = hashlib.sha256(data).hexdigest()
    if digest in _BUILT:
        _BUILT.move_to_end(digest)
        return _BUILT[digest]
    tokenizer = build_tekken_tokenizer(data)
    _BUILT[digest] = tokenizer
    while len(_BUILT) > CACHED_BLOBS:
        _BUILT.popitem(last=False)
    return tokenizer


def tekken_vocabulary(data: bytes) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, int]]:
    """(vocab: byte-level string -> id, merges in priority order, special token string -> id), by ComfyUI's rules."""
    try:
        tekken = json.loads(data)
        config, vocab = tekken["config"], tekken["vocab"]
        offset, vocab_size = config["default_num_special_tokens"], config["default_vocab_size"]
    except (ValueError, KeyError, TypeError) as error:
        raise TekkenError(f"not a tekken tokenizer blob (JSON with config and vocab): {error!r}") from None
    if "special_tokens" not in tekken:  # ComfyUI fails on such a file too (KeyError 'special_tokens')
        raise TekkenError("this tekken blob has no special_tokens list (an old v3 file); ComfyUI 0.33 cannot "
                          "tokenize with it either")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = bytes_to_unicode()  # GPT-2's byte -> printable character map, what byte-level BPE vocabularies use

    def byte_level(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    def special_name(token) -> str:
        return token.decode("utf-8", errors="replace") if isinstance(token, bytes) else token

    kept = vocab_size - offset
    ordinary = {base64.b64decode(t["token_bytes"]): t["rank"] + offset for t in vocab if t["rank"] < kept}
    specials = {(base64.b64decode(t["token_bytes"]) if "token_bytes" in t else t["token_str"]): t["rank"]
                for t in tekken["special_tokens"]}
    ranks = {**specials, **ordinary}  # an ordinary token with a special's bytes keeps the ordinary rank (as ComfyUI)
    strings, triples = {}, []
    for token, rank in ranks.items():
        if token in specials:
            strings[special_name(token)] = rank
            continue
        strings[byte_level(token)] = rank
        splits = [(token[:i], token[i:]) for i in range(1, len(token))
                  if token[:i] in ranks and token[i:] in ranks]  # the whole token is in ranks: it is this one
        triples += sorted(((a, b, rank) for a, b in splits), key=lambda t: (ranks[t[0]], ranks[t[1]]))
    triples.sort(key=lambda t: t[2])  # stable: within one merged token the parts' order above stays
    merges = list(dict.fromkeys((byte_level(a), byte_level(b)) for a, b, _ in triples))
    special_ids = {special_name(token): strings[special_name(token)] for token in specials}  # each one is in strings
    return strings, merges, special_ids


def build_tekken_tokenizer(data: bytes):
    """A ``PreTrainedTokenizerFast`` (offsets supported) equal to ComfyUI's tekken BPETokenizer on the same blob."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges, special_ids = tekken_vocabulary(data)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                                   ignore_merges=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in special_ids])
    wrong = {name: backend.token_to_id(name) for name, i in special_ids.items() if backend.token_to_id(name) != i}
    if wrong:
        raise TekkenError(f"special tokens got other ids than the blob's: {dict(list(wrong.items())[:5])}")
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)
