"""The pool's one set of build rules (composer/pool/build.py) on synthetic rows: cleaning, the size cap
and the stratified, string-seeded splits."""

from __future__ import annotations

import json

from composer.pool import build
from composer.pool.build import cap, clean, clean_text, split


def test_cleaning_rules():
    assert clean_text("  a\n\tb   c ") == "a b c"
    long = "word " * 600
    cut = clean_text(long)
    assert len(cut) <= build.MAX_CHARS and not cut.endswith(" ") and cut.endswith("word")
    rows = [("short", "a")]  # under 10 characters
    rows += [(f"text number {i} of label a", "a") for i in range(25)]
    rows += [(f"text number {i} of label b", "b") for i in range(19)]  # under 20 rows: dropped
    rows += [("the same text twice", "a"), ("the   same text twice", "a")]  # one copy kept
    rows += [("a text whose copies disagree", "a"), ("a text whose copies disagree", "c")]  # dropped whole
    out = clean(rows)
    assert {label for _, label in out} == {"a"}
    assert sum(t == "the same text twice" for t, _ in out) == 1
    assert not any("disagree" in t for t, _ in out) and not any(t == "short" for t, _ in out)
    assert len(out) == 26


def test_cap_keeps_proportions_and_splits_are_stratified_deterministic_and_disjoint():
    rows = [(f"row {i} of a", "a") for i in range(600)] + [(f"row {i} of b", "b") for i in range(200)]
    capped = cap("t", rows, 400)
    assert len(capped) == 400 and sum(label == "a" for _, label in capped) == 300
    parts = split("t", capped)
    assert {k: len(v) for k, v in parts.items()} == {"train": 320, "validation": 40, "test": 40}
    for part in parts.values():
        assert sum(label == "a" for _, label in part) == 3 * sum(label == "b" for _, label in part)
    texts = [set(t for t, _ in p) for p in parts.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert split("t", list(reversed(capped))) == parts  # independent of the order rows arrive in
    assert split("other", capped) != parts  # each task its own seeded draw


def test_build_writes_splits_and_meta(tmp_path, monkeypatch):
    rows = [(f"a sentence about topic {i % 3} number {i}", f"topic{i % 3}") for i in range(90)]
    monkeypatch.setitem(build.READERS, "toy", build.READERS["rt_polarity"].__class__("x", lambda: rows, "toy rows"))
    built = build.build_task("toy", out=tmp_path)
    assert built.splits == {"train": 72, "validation": 9, "test": 9}
    meta = json.loads((tmp_path / "toy" / "meta.json").read_text())
    assert meta["labels"] == {"topic0": 30, "topic1": 30, "topic2": 30} and meta["domain"] == "toy rows"
    corpus = build.load_pool_task("toy", root=tmp_path)
    assert corpus.task.labels == ("topic0", "topic1", "topic2") and len(corpus.train) == 72
    assert build.built_tasks(tmp_path) == ["toy"]
