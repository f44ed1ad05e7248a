"""USD prices per million input/output tokens for the MMLU-Pro models (see PRICES.md beside this file).

Open-weight models are priced at the published size tiers of a serverless open-model host
(Together AI's tiered "by parameter count" pricing, 2024: up to 4B $0.10, 4.1-8B $0.20,
8.1-21B $0.30, 21.1-41B $0.80, 41.1-80B $0.90; mixture-of-experts at $0.60 for up to 56B total),
the same price for input and output. Proprietary models use their provider's list price at the time
of the evaluation. RouterBench rows keep their own recorded USD costs and do not use this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    params_b: float  # parameter count in billions (total, for mixtures of experts)
    basis: str  # what the number rests on

    def cost_usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


def _tier(params_b: float) -> Price:
    for limit, usd in ((4.0, 0.10), (8.0, 0.20), (21.0, 0.30), (41.0, 0.80), (80.0, 0.90)):
        if params_b <= limit:
            return Price(usd, usd, params_b, f"open-model size tier <= {limit:g}B")
    raise ValueError(f"no size tier for {params_b}B parameters")


PRICES: dict[str, Price] = {
    "Llama-2-7b-hf": _tier(6.7),
    "Llama-2-13b-hf": _tier(13.0),
    "Llama-2-70b-hf": _tier(69.0),
    "Meta-Llama-3-8B": _tier(8.0),
    "Meta-Llama-3-70B": _tier(70.6),
    "Meta-Llama-3_1-8B": _tier(8.0),
    "Meta-Llama-3_1-8B-Instruct": _tier(8.0),
    "Meta-Llama-3_1-70B": _tier(70.6),
    "Mistral-7B-v0.1": _tier(7.2),
    "Mistral-7B-v0.2-hf": _tier(7.2),
    "Mistral-7B-Instruct-v0.1": _tier(7.2),
    "mathstral-7B": _tier(7.2),
    "Mixtral-8x7B-v0.1": Price(0.60, 0.60, 46.7, "open-model mixture-of-experts tier <= 56B"),
    "Mixtral-8x7B-Instruct-v0.1": Price(
        0.60, 0.60, 46.7, "open-model mixture-of-experts tier <= 56B"
    ),
    "Phi-3-mini-4k-instruct": _tier(3.8),
    "Qwen1.5-7B-Chat": _tier(7.7),
    "Qwen1.5-72B-Chat": _tier(72.3),
    "Yi-6B": _tier(6.1),
    "Yi-34B": _tier(34.4),
    "c4ai-command-r-v01": Price(0.50, 1.50, 35.0, "Cohere Command R list price, March 2024"),
    "gemini-1.5-flash-002": Price(
        0.075, 0.30, 0.0, "Google Gemini 1.5 Flash list price, prompts <= 128k"
    ),
    "jamba-1.5-large": Price(2.00, 8.00, 398.0, "AI21 Jamba 1.5 Large list price, August 2024"),
}


def price_of(model: str) -> Price:
    try:
        return PRICES[model]
    except KeyError:
        raise KeyError(f"no price for model {model!r}; add it to training/data/prices.py") from None
