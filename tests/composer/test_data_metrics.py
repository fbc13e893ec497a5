"""Dataset validation (with line numbers), collation and metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from composer.data import Collator, TaskSpec, epoch_order, label_histogram, parse_examples
from composer.errors import ConfigError, DataError
from composer.metrics import classification_metrics, macro_f1, mcc, pearson, spearman

TASK = TaskSpec(name="s", labels=("neg", "pos"))


def test_jsonl_and_csv_parse_the_same_rows():
    jsonl = b'{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": "neg", "text_pair": "movie"}\n'
    csv_ = b"text,label,text_pair\ngood,pos,\nbad,neg,movie\n"
    a = parse_examples(jsonl, "jsonl", TASK)
    b = parse_examples(csv_, "csv", TASK)
    assert a == b
    assert a[1].text_pair == "movie" and a[0].text_pair is None
    assert label_histogram(a) == {"neg": 1, "pos": 1}


@pytest.mark.parametrize(
    ("data", "fmt", "line", "reason"),
    [
        (b'{"text": "ok", "label": "pos"}\n{"text": "x"}\n', "jsonl", 2, "'label' is missing"),
        (b'{"text": "ok", "label": "pos"}\n{"text": "", "label": "pos"}\n', "jsonl", 2, "'text' is missing or empty"),
        (b'{"text": "ok", "label": "maybe"}\n', "jsonl", 1, "not in the task's label set"),
        (b'{"text": "ok", "label": "pos"}\n{not json\n', "jsonl", 2, "invalid JSON"),
        (b"text,label\nok,pos\n,neg\n", "csv", 3, "'text' is missing or empty"),
        (b"text,label\nok,pos\nfine,\n", "csv", 3, "'label' is missing"),
        (b"words,label\nok,pos\n", "csv", 1, "header"),
        (b"\r0", "csv", 1, "header"),  # a lone carriage return (schemathesis found a 500 here)
    ],
)
def test_bad_rows_name_their_line(data, fmt, line, reason):
    with pytest.raises(DataError, match=reason) as e:
        parse_examples(data, fmt, TASK)
    assert e.value.line == line
    assert f"line {line}" in str(e.value)


def test_empty_file_is_refused():
    with pytest.raises(DataError, match="no rows"):
        parse_examples(b"\n\n", "jsonl", TASK)


def test_regression_labels_must_be_finite_numbers():
    task = TaskSpec(kind="regression")
    assert parse_examples(b'{"text": "a", "label": 0.5}\n', "jsonl", task)[0].label == 0.5
    with pytest.raises(DataError, match="finite"):
        parse_examples(b'{"text": "a", "label": "nan"}\n', "jsonl", task)
    with pytest.raises(DataError, match="number"):
        parse_examples(b'{"text": "a", "label": "high"}\n', "jsonl", task)


def test_label_set_with_duplicates_is_refused():
    with pytest.raises(ConfigError, match="duplicate"):
        TaskSpec(labels=("a", "b", "a"))


def test_collator_pads_dynamically_and_encodes_pairs(tiny_bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    col = Collator(tok, TASK)
    ex = parse_examples(
        b'{"text": "good", "label": "pos"}\n{"text": "very good movie", "label": "neg"}\n', "jsonl", TASK
    )
    b = col(ex)
    assert b["input_ids"].shape == (2, 5)  # [CLS] very good movie [SEP]: the longest row, not max_length
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert b["labels"].tolist() == [1, 0]
    pair = parse_examples(b'{"text": "good", "text_pair": "movie", "label": "pos"}\n', "jsonl", TASK)
    assert col(pair)["token_type_ids"].tolist() == [[0, 0, 0, 1, 1]]


def test_epoch_order_is_a_seeded_permutation():
    a, b = epoch_order(50, 1, 0), epoch_order(50, 1, 0)
    assert a == b and sorted(a) == list(range(50))
    assert epoch_order(50, 1, 1) != a


def test_metrics_against_hand_computed_values():
    gold = np.array([0, 0, 1, 1, 1])
    pred = np.array([0, 1, 1, 1, 0])
    # class 0: tp=1 fp=1 fn=1 -> f1=0.5 ; class 1: tp=2 fp=1 fn=1 -> f1=2/3
    assert macro_f1(pred, gold, 2) == pytest.approx((0.5 + 2 / 3) / 2)
    # binary MCC = (tp*tn - fp*fn)/sqrt(...) = (2*1-1*1)/sqrt(3*2*3*2) = 1/6
    assert mcc(pred, gold, 2) == pytest.approx(1 / 6)
    logits = np.eye(2)[pred]
    assert classification_metrics(logits, gold)["accuracy"] == pytest.approx(0.6)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
