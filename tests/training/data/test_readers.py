import json
import zipfile

import numpy as np
import pytest

from training.data import LogFormatError, load_derived, load_matrix, write_log
from training.data.build import BuildConfig, build
from training.data.mmlu_pro import query_text, read_model_outputs
from training.data.routerbench import prompt_text, read_routerbench_csv
from training.data.schema import parse_row
from training.data.tokens import count_tokens, smollm2_tokenizer


def _record(qid, pred, answer="B", category="math"):
    return {
        "question_id": qid,
        "question": f"Question {qid}?",
        "options": ["one", "two", "three"],
        "answer": answer,
        "answer_index": 1,
        "cot_content": "",
        "category": category,
        "src": "x",
        "pred": pred,
        "generated_text": f"The answer is ({pred}).",
    }


def _zip(folder, model, entries):
    path = folder / f"model_outputs_{model}_5shots.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"model_outputs_{model}_5shots.json", json.dumps(entries))
    return path


def test_mmlu_reader_scores_and_skips_non_records(tmp_path):
    path = _zip(
        tmp_path,
        "Tiny-1B",
        [_record(1, "B"), _record(2, None), _record(3, "C"), "junk", {"question_id": 4}],
    )
    out = read_model_outputs(path)
    assert out.model == "Tiny-1B"
    assert out.skipped == 2
    assert [r.correct for r in out.records] == [True, False, False]  # a missing prediction is wrong


def test_mmlu_reader_rejects_a_file_that_is_not_a_list(tmp_path):
    path = tmp_path / "model_outputs_X_5shots.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.json", json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="expected a JSON list"):
        read_model_outputs(path)


def test_query_text_letters_the_options():
    assert query_text("Q?", ["a", "b"]) == "Q?\n\nA. a\nB. b"


HEADER = "sample_id,prompt,eval_name,m1,m2,m1|model_response,m2|model_response,m1|total_cost,m2|total_cost,oracle_model_to_route_to\n"


def test_routerbench_reader_keeps_missing_cells_missing(tmp_path):
    path = tmp_path / "t_test.csv"
    path.write_text(
        HEADER
        + "s1,\"['Hello', 'there']\",arc,1,0,yes,no,0.1,0.2,m1\ns2,plain,arc,,1,,ok,,0.3,m2\n"
    )
    table = read_routerbench_csv(path)
    assert table.models == ["m1", "m2"]
    assert table.missing_cells == 1
    assert table.rows[0].prompt == "Hello\nthere"
    assert table.rows[1].scores == {"m2": 1.0}


def test_routerbench_reader_names_bad_cell(tmp_path):
    path = tmp_path / "t_test.csv"
    path.write_text(HEADER + "s1,p,arc,1,0,a,b,0.1,0.2,m1\ns2,p,arc,1,0,a,b,cheap,0.2,m1\n")
    with pytest.raises(LogFormatError) as err:
        read_routerbench_csv(path)
    assert (err.value.line, err.value.field) == (3, "m1|total_cost")


def test_prompt_text_leaves_plain_text_alone():
    assert prompt_text("[not a list") == "[not a list"


def test_smollm2_tokenizer_counts_real_tokens():
    tok = smollm2_tokenizer()
    enc = tok.encode("Hello world, 12345!", add_special_tokens=False)
    # digits are split one per token; special tokens are single ids
    assert enc.tokens == ["Hello", "Ġworld", ",", "Ġ", "1", "2", "3", "4", "5", "!"]
    assert len(tok.encode("<|im_start|>", add_special_tokens=False).ids) == 1
    assert count_tokens(["", "a b"]) == [0, 2]
    assert tok.decode(enc.ids) == "Hello world, 12345!"


def _fake_encode(texts):
    rng = np.random.default_rng(len(texts))
    X = rng.standard_normal((len(texts), 8)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_build_and_load_derived_on_a_small_slice(tmp_path):
    src = tmp_path / "shared"
    (src / "mmlu_pro").mkdir(parents=True)
    models = ["Llama-2-7b-hf", "Yi-6B", "Yi-34B", "gemini-1.5-flash-002", "Mistral-7B-v0.1"]
    for k, m in enumerate(models):
        _zip(src / "mmlu_pro", m, [_record(q, "B" if (q + k) % 2 else "A") for q in range(20)])
    (src / "routerbench_subset").mkdir()
    (src / "routerbench_subset" / "a_test.csv").write_text(HEADER + "s1,p,arc,1,0,a,b,0.1,0.2,m1\n")
    (src / "routerbench_subset" / "a_train.csv").write_text(
        HEADER + "s1,p,arc,1,,a,,0.1,,m1\ns2,q,arc,0,1,a,b,0.1,0.2,m2\n"
    )
    cfg = BuildConfig(num_unseen=1)
    build(src_root=src, derived=tmp_path / "derived", encode=_fake_encode, cfg=cfg)
    m = load_derived("mmlu_pro", tmp_path / "derived")
    assert m.scores.shape == (20, 5)
    assert len(m.meta["unseen_models"]) == 1 and len(m.meta["seen_models"]) == 4
    assert set(m.split) <= {"train", "val", "test"} and (m.split == "test").sum() == 4
    j = m.models.index("Yi-6B")
    assert m.scores[3, j] == 0.0 and m.scores[4, j] == 1.0  # (q + k) odd -> "B" -> correct
    assert np.all(m.cost_usd > 0)
    r = load_derived("routerbench", tmp_path / "derived")
    assert r.meta["duplicate_sample_ids"] == 1  # s1 in both files is kept twice, with a suffix
    assert sorted(r.query_ids) == ["s1", "s1#2", "s2"]
    assert np.isnan(r.scores).sum() == 1 and r.meta["missing_cells"] == 1
    # a second build with if_missing touches nothing
    before = (tmp_path / "derived" / "mmlu_pro" / "meta.json").stat().st_mtime_ns
    build(src_root=src, derived=tmp_path / "derived", encode=_fake_encode, if_missing=True)
    assert (tmp_path / "derived" / "mmlu_pro" / "meta.json").stat().st_mtime_ns == before


def test_load_matrix_from_any_log_uses_price_table_for_missing_costs(tmp_path):
    rows = [
        parse_row(
            {
                "query_id": "a",
                "query": "x",
                "model": "Yi-6B",
                "score": 1,
                "prompt_tokens": 1_000_000,
                "completion_tokens": 0,
            }
        ),
        parse_row(
            {
                "query_id": "a",
                "query": "x",
                "model": "other",
                "score": 0,
                "prompt_tokens": 5,
                "completion_tokens": 5,
                "cost_usd": 0.5,
            }
        ),
        parse_row(
            {
                "query_id": "b",
                "query": "y",
                "model": "other",
                "score": 1,
                "prompt_tokens": 5,
                "completion_tokens": 5,
                "cost_usd": 0.25,
            }
        ),
    ]
    path = write_log(rows, tmp_path / "log.jsonl")
    m = load_matrix(path, encode=_fake_encode)
    assert m.models == ["Yi-6B", "other"]
    assert m.cost_usd[0, 0] == pytest.approx(0.20)  # 1M input tokens at $0.20 per Mtok
    assert np.isnan(m.scores[1, 0]) and m.scores[1, 1] == 1.0
