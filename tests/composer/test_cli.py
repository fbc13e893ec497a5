"""The training CLI end to end on a tiny model: progress, metric line, a loadable artifact, clear errors."""

from __future__ import annotations

import json

from composer import kinds
from composer.cli import main
from tests.conftest import write_jsonl


def test_train_adapter_cli_writes_a_loadable_artifact(tiny_bert_dir, tmp_path, toy_rows, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", toy_rows)
    val = write_jsonl(tmp_path / "val.jsonl", toy_rows[:4] + toy_rows[-4:])
    out = tmp_path / "adapter"
    rc = main(
        [
            "train-adapter",
            "--base",
            str(tiny_bert_dir),
            "--train",
            str(train),
            "--validation",
            str(val),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--reduction-factor",
            "4",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "training" in captured.err and "6/6" in captured.err  # the tqdm bar reached the end
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["steps"] == 6 and 0.0 <= summary["validation"]["accuracy"] <= 1.0
    art = kinds.load_dir(out)
    assert art.labels == ["neg", "pos"] and art.head is not None


def test_cli_reports_bad_rows_with_line_numbers(tiny_bert_dir, tmp_path, toy_rows, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [*toy_rows[:3], {"text": "", "label": "pos"}])
    rc = main(
        [
            "train-adapter",
            "--base",
            str(tiny_bert_dir),
            "--train",
            str(train),
            "--validation",
            str(train),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "line 4" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_train_adapter_cli_trains_a_lora(tiny_bert_dir, tmp_path, toy_rows, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", toy_rows)
    val = write_jsonl(tmp_path / "val.jsonl", toy_rows[:4] + toy_rows[-4:])
    out = tmp_path / "lora"
    rc = main(
        [
            "train-adapter",
            "--base",
            str(tiny_bert_dir),
            "--train",
            str(train),
            "--validation",
            str(val),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--preset",
            "lora",
            "--rank",
            "2",
        ]
    )
    assert rc == 0
    art = kinds.load_dir(out)
    assert art.kind == "lora" and art.config.r == 2 and art.head is not None
    # B starts at zero: training moved it
    assert any(t.abs().max() > 0 for k, t in art.tensors.items() if k.endswith(".B"))
