"""The real query encoder (torch fp32) and its int8 ONNX twin, on ~50 varied texts.

Loads the packaged MiniLM weights and builds the ONNX model once into a temporary folder
(about 15 s); no hub access.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.encoder import EMBED_DIM, QueryEncoder

pytestmark = pytest.mark.slow

QUESTIONS = Path(__file__).resolve().parents[2] / "training/data/derived/mmlu_pro/questions.parquet"

CHAT_TURNS = [
    "hi",
    "thanks, that worked!",
    "What is the capital of Australia?",
    "write a haiku about autumn rain",
    "Can you fix this bug? TypeError: 'NoneType' object is not subscriptable",
    "translate 'where is the train station' into German",
    "explain quantum entanglement like I'm five",
    "what's 17 * 23?",
    "Summarise the plot of Hamlet in two sentences.",
    "how do I reverse a linked list in C?",
    "Recommend a good sci-fi novel for a long flight",
    "is it safe to eat raw cookie dough",
    "SELECT * FROM users WHERE id = 3; why is this slow on a big table?",
    "give me a 3-day workout plan for beginners",
    "What causes the seasons on Earth?",
    "convert 72 Fahrenheit to Celsius",
    "Write a polite email declining a meeting invitation.",
    "who won the 2018 FIFA World Cup",
    "what is the derivative of x^3 * sin(x)",
    "Tell me a joke about databases.",
    "How does HTTPS keep my password private?",
    "list three differences between mitosis and meiosis",
    "my sourdough starter smells like acetone, is it dead?",
    "Explain the difference between a stock and a bond.",
    "can you make this sentence more formal: gonna be late, sorry",
    "What's a good name for a grey cat?",
    "rust borrow checker error: cannot borrow `v` as mutable more than once",
    "Plan a vegetarian dinner for six people.",
    "why is the sky blue",
    "How many moons does Jupiter have?",
]

LONG_INPUTS = [
    "I'm reviewing a pull request for our payments service and want a second opinion.\n\n"
    "The change adds a retry loop around the call to the card processor. Each attempt waits "
    "twice as long as the previous one, starting at 100 ms, and gives up after five attempts. "
    "The author argues this will reduce the number of failed checkouts during the processor's "
    "brief outages, which happen a few times a week.\n\n"
    "My worry is idempotency. If the processor received the first request but the response was "
    "lost, the retry might charge the customer twice. The processor supports an idempotency key "
    "header, but the PR doesn't set it. There's also no jitter, so after an outage every client "
    "retries in lockstep.\n\nWhat else should I look for, and how would you phrase the review?",
    "Dear hiring committee,\n\nI am writing to apply for the position of field ecologist with the "
    "coastal wetlands programme. For the past four years I have monitored salt-marsh vegetation "
    "along the estuary, designing transect surveys, identifying more than two hundred plant "
    "species, and training volunteers to record data consistently.\n\nIn my current role I led a "
    "project measuring how sediment supply affects marsh elevation relative to sea-level rise. We "
    "installed surface elevation tables at twelve sites and found that marshes near the river "
    "mouth kept pace while those on the outer coast were losing ground.\n\nI would welcome the "
    "chance to bring this experience to your team. Please find my CV and references attached.\n\n"
    "Yours faithfully,\nA. Applicant",
    "Here is my training log for the last month; can you tell me why my 5k time has stalled?\n\n"
    "Week 1: three easy runs of 5 km at 6:10/km, one interval session (6 x 400 m at 4:30/km).\n"
    "Week 2: same, plus a long run of 12 km at 6:20/km. Legs felt heavy on Thursday.\n"
    "Week 3: skipped intervals because of work; two easy runs and one 14 km long run.\n"
    "Week 4: parkrun in 26:40, the same as last month. Slept about six hours a night.\n\n"
    "I'm 38, I started running a year ago, and I do no strength training. I'd like to break 25 "
    "minutes by the spring. Should I add more intervals, run more easy miles, or change something "
    "else entirely?",
    "Context: our team maintains a Django monolith with about 400 models. Deployments take 40 "
    "minutes because the test suite runs serially and migrations lock large tables.\n\n"
    "Question 1: is it worth splitting the test suite with pytest-xdist, given that many tests "
    "share a database and some rely on ordering?\n\nQuestion 2: for migrations that add a "
    "non-null column with a default to a table of 80 million rows on PostgreSQL 15, is the "
    "default still applied by rewriting the table, or is it metadata-only now?\n\n"
    "Question 3: we are considering moving the reporting module into a separate service. What "
    "are the signs that this would help rather than just add network calls and a second deploy?",
    "The following passage is from a history textbook. Please rewrite it for ten-year-olds.\n\n"
    "The Industrial Revolution, which began in Britain in the late eighteenth century, "
    "transformed the production of goods from hand methods to machines. Water power and later "
    "steam engines drove textile mills, while improvements in iron making supplied the material "
    "for railways and bridges. Workers moved from the countryside to rapidly growing towns, "
    "where they often lived in crowded housing and worked long hours, including children.\n\n"
    "Over the nineteenth century, reforms limited working hours, introduced factory inspections "
    "and, eventually, compulsory schooling. Historians still debate whether living standards "
    "rose or fell for ordinary people during the first decades of industrialisation.",
    "Recipe help: I want to adapt my grandmother's apple cake for a gluten-free guest.\n\n"
    "Ingredients: 250 g plain flour, 2 tsp baking powder, 150 g butter, 150 g sugar, 3 eggs, "
    "100 ml milk, 4 apples peeled and sliced, cinnamon, a pinch of salt.\n\nMethod: cream the "
    "butter and sugar, beat in the eggs one at a time, fold in the flour and baking powder, loosen "
    "with milk, spread half in a tin, layer the apples with cinnamon, cover with the rest and "
    "bake at 180 C for 50 minutes.\n\nWhich flour blend should I use, do I need xanthan gum, and "
    "will the baking time change? I'd rather not use almond flour because of a nut allergy.",
]


def varied_texts():
    """30 chat turns, 6 written multi-paragraph requests and 14 long MMLU-Pro questions."""
    questions = pd.read_parquet(QUESTIONS, columns=["query_id", "query", "category"])
    long_ones = questions[questions["query"].str.len() > 900].sort_values("query_id")
    mmlu = long_ones.groupby("category", sort=True).head(1)["query"].tolist()[:14]
    texts = CHAT_TURNS + LONG_INPUTS + mmlu
    assert len(texts) == 50 and len(set(texts)) == 50
    return texts


def cosine_rows(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def nearest_neighbours(X):
    sims = X @ X.T
    np.fill_diagonal(sims, -np.inf)
    return sims.argmax(axis=1)


@pytest.fixture(scope="module")
def texts():
    return varied_texts()


@pytest.fixture(scope="module")
def torch_encoder():
    return QueryEncoder()


@pytest.fixture(scope="module")
def fp32(torch_encoder, texts):
    return torch_encoder.encode(texts)


@pytest.fixture(scope="module")
def onnx_root(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return tmp_path_factory.mktemp("junction-cache")


@pytest.fixture(scope="module")
def onnx_encoder(onnx_root):
    from training.fast_encoder import OnnxMiniLM

    return OnnxMiniLM(cache_dir=onnx_root / "onnx")


def test_torch_vectors_are_unit_norm_384d(fp32, texts):
    assert fp32.shape == (len(texts), EMBED_DIM)
    assert fp32.dtype == np.float32
    assert np.isfinite(fp32).all()
    np.testing.assert_allclose(np.linalg.norm(fp32, axis=1), 1.0, atol=1e-5)


def test_torch_is_deterministic(torch_encoder, texts):
    subset = texts[::5]
    np.testing.assert_array_equal(torch_encoder.encode(subset), torch_encoder.encode(subset))


def test_torch_is_batch_invariant(torch_encoder, fp32, texts):
    # Alone (no padding) versus inside a 50-text batch padded to 256 tokens.
    for i in (0, 4, 12, 31, 35, 40, 49):
        alone = torch_encoder.encode([texts[i]])[0]
        np.testing.assert_allclose(alone, fp32[i], atol=2e-5)


def test_encoder_handles_empty_input(torch_encoder):
    assert torch_encoder.encode([]).shape == (0, EMBED_DIM)


def test_disk_cache_returns_identical_vectors_without_encoding(tmp_path, texts, monkeypatch):
    path = tmp_path / "emb.sqlite"
    first = QueryEncoder(cache_path=path)
    encoded = []
    original = first._encode_uncached

    def counting(batch, show_progress):
        encoded.extend(batch)
        return original(batch, show_progress)

    monkeypatch.setattr(first, "_encode_uncached", counting)
    subset = texts[:6] + texts[:2]  # duplicates are encoded once
    vecs = first.encode(subset)
    assert sorted(encoded) == sorted(set(subset))
    encoded.clear()
    np.testing.assert_array_equal(first.encode(subset), vecs)
    assert encoded == []
    assert first.cache is not None and len(first.cache) == 6

    # A new process reading the same file: served entirely from disk, no model load.
    second = QueryEncoder(cache_path=path)

    def refuse(batch, show_progress):
        raise AssertionError(f"re-encoded {len(batch)} cached texts")

    monkeypatch.setattr(second, "_encode_uncached", refuse)
    np.testing.assert_array_equal(second.encode(list(reversed(subset))), vecs[::-1])


def test_onnx_int8_agrees_with_fp32(onnx_encoder, fp32, texts):
    int8 = onnx_encoder.encode(texts, batch_size=16)
    assert int8.shape == fp32.shape and int8.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    cos = cosine_rows(int8, fp32)
    assert cos.mean() >= 0.99, f"mean cosine {cos.mean():.4f}"
    assert cos.min() >= 0.97, f"min cosine {cos.min():.4f} for {texts[int(cos.argmin())][:60]!r}"
    same = nearest_neighbours(int8) == nearest_neighbours(fp32)
    assert same.mean() >= 0.9, f"nearest neighbour agrees for {same.mean():.0%} of texts"


def test_onnx_is_nearly_batch_invariant(onnx_encoder, texts):
    batched = onnx_encoder.encode(texts, batch_size=64)
    alone = np.stack([onnx_encoder.encode(t) for t in texts[::7]])
    assert cosine_rows(alone, batched[::7]).min() >= 0.995


def test_onnx_model_is_cached_and_reused(onnx_encoder, onnx_root, texts, monkeypatch):
    import training.fast_encoder as fast

    built = sorted(p.name for p in (onnx_root / "onnx").iterdir())
    assert len(built) == 1 and built[0].endswith(f"-{fast.RECIPE}.onnx")  # no leftover temp files

    def refuse(*args):
        raise AssertionError("exported again although the cache holds the model")

    monkeypatch.setattr(fast, "_export_fp32", refuse)
    # QueryEncoder finds the same file through $JUNCTION_CACHE_DIR.
    monkeypatch.setenv("JUNCTION_CACHE_DIR", str(onnx_root))
    via_query_encoder = QueryEncoder(backend="onnx").encode(texts[:5])
    np.testing.assert_allclose(via_query_encoder, onnx_encoder.encode(texts[:5]), atol=1e-6)


def test_bench_texts_have_the_requested_token_count():
    from tokenizers import Tokenizer

    from training.bench_encoder import texts_of_length
    from training.encoder import model_dir

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()  # tokenizer.json pads to 128 by default
    for tokens in (16, 64, 256):
        texts = texts_of_length(tokens, 4)
        assert len(set(texts)) == 4
        assert [len(tok.encode(t).ids) for t in texts] == [tokens] * 4


def test_bench_command_joins_an_existing_bench_group():
    import argparse

    from training.bench_encoder import EncoderBenchConfig, register_bench
    from training.config_cli import dataclass_from_args

    parser = argparse.ArgumentParser()
    top = parser.add_subparsers(dest="command", required=True)
    other = top.add_parser("bench").add_subparsers(dest="bench_command", required=True)
    other.add_parser("scoring")
    register_bench(top)

    assert parser.parse_args(["bench", "scoring"]).bench_command == "scoring"
    args = parser.parse_args(["bench", "encoder", "--threads", "2", "--backends", "onnx-int8"])
    cfg = dataclass_from_args(EncoderBenchConfig, args)
    assert (cfg.threads, cfg.backend_list, cfg.lengths) == (2, ["onnx-int8"], (16, 64, 256))
    with pytest.raises(ValueError, match="backends"):
        EncoderBenchConfig(backends="torch-fp16")
