"""The SAE corpus on fixtures: format parsers drop boilerplate, the build is deterministic, the
hash split is stable, languages are identified, duplicates go, the mix follows the weights and
the manifest counts match the files."""

import gzip
import json
import shutil

import pytest

from saelora_core.sae.corpus import CorpusSource, build_corpus
from saelora_core.sae.debian_formats import dictd_entries, fortune_documents, wordnet_glosses
from saelora_core.sae.text_extract import html_to_text, mallard_to_text, man_to_text, split_long
from saelora_core.sae.text_hygiene import is_heldout, near_duplicates


def salad(words: str, i: int, n: int = 28) -> str:
    """A distinct document per ``i`` in one language: its words, shuffled by ``i``."""
    import random

    w = words.split()
    rng = random.Random(i)
    return " ".join(rng.choice(w) for _ in range(n)) + "."


EN_WORDS = (
    "the river runs through valley and farmers use its water for their fields in dry season "
    "while town at mouth depends on fishing trade people with boats market every morning"
)
FR_WORDS = (
    "la rivière traverse vallée et les paysans utilisent son eau pour leurs champs pendant "
    "saison sèche tandis que ville vit de pêche du commerce avec des bateaux marché chaque matin"
)
DE_WORDS = (
    "der Fluss fließt durch das Tal und die Bauern nutzen sein Wasser für ihre Felder in "
    "Trockenzeit während Stadt von Fischerei Handel lebt mit Booten jeden Morgen auf dem Markt"
)
EN = [salad(EN_WORDS, i) for i in range(30)]
FR = [salad(FR_WORDS, i) for i in range(30)]
DE = [salad(DE_WORDS, i) for i in range(30)]


def sources(extra=()):
    return [
        CorpusSource("en", lambda: EN + [EN[0], EN[1] + " "], "prose", weight=2.0),
        CorpusSource("fr", lambda: FR, "prose", weight=1.0),
        CorpusSource("de", lambda: DE, "dialogue", weight=1.0),
        *extra,
    ]


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_build_is_deterministic_and_the_manifest_matches(tmp_path):
    a = build_corpus(tmp_path / "a", sources=sources(), heldout_frac=0.2, train_tokens=6000)
    b = build_corpus(tmp_path / "b", sources=sources(), heldout_frac=0.2, train_tokens=6000)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (
        tmp_path / "b" / "train.jsonl"
    ).read_bytes()
    assert a.manifest == b.manifest
    train, held = rows(a.train_path), rows(a.heldout_path)
    m = a.manifest["sources"]
    assert m["en"]["exact_duplicates_removed"] == 2  # EN[0] again, and EN[1] with a trailing space
    for name in ("en", "fr", "de"):
        assert m[name]["train_documents"] + m[name]["heldout_documents"] == m[name]["documents"]
        assert m[name]["heldout_documents"] == sum(r["source"] == name for r in held)
        assert m[name]["train_rows_after_mix"] == sum(r["source"] == name for r in train)
        units = sum(len(r["text"]) // 4 for r in train if r["source"] == name)
        assert m[name]["train_units_after_mix"] == units
    assert not {r["text"] for r in held} & {r["text"] for r in train}
    # languages identified per document
    assert {r["lang"] for r in train if r["source"] == "fr"} == {"fr"}
    assert {r["lang"] for r in train if r["source"] == "de"} == {"de"}
    assert m["fr"]["languages"] == {"fr": 30}
    # the mix follows the weights: en gets twice fr's share (within one document)
    en, fr = m["en"]["train_units_after_mix"], m["fr"]["train_units_after_mix"]
    assert abs(en - 2 * fr) <= 2 * 60
    assert abs(a.manifest["genre_token_shares"]["prose"] - 0.75) < 0.02


def test_hash_split_is_stable_when_sources_change(tmp_path):
    a = build_corpus(tmp_path / "a", sources=sources(), heldout_frac=0.3, train_tokens=6000)
    more = CorpusSource(
        "es", lambda: [f"El río {i} cruza el valle." * 4 for i in range(10)], weight=1.0
    )
    b = build_corpus(tmp_path / "b", sources=sources([more]), heldout_frac=0.3, train_tokens=6000)
    held_a = {r["text"] for r in rows(a.heldout_path)}
    held_b = {r["text"] for r in rows(b.heldout_path) if r["source"] != "es"}
    assert held_a == held_b
    assert all(is_heldout(t, 0.3) for t in held_a)


def test_near_duplicates_are_found_and_distinct_texts_kept():
    base = " ".join(f"word{i}" for i in range(200))
    near = base.replace("word100", "changed")  # one word in 200
    other = " ".join(f"term{i}" for i in range(200))
    assert near_duplicates([base, other, near]) == {2}


def test_a_budget_needs_weights(tmp_path):
    with pytest.raises(ValueError, match="weight on every source"):
        build_corpus(tmp_path, sources={"x": (lambda: EN, 1)}, train_tokens=100)


def test_html_parser_drops_navigation_and_keeps_code_lines():
    html = """<html><head><title>T</title><script>var x = 1;</script></head><body>
    <div class="navheader"><a href="a.html">Prev</a> Next</div>
    <h1>Joins Between Tables</h1><p>Queries can access
    multiple tables at once.</p>
    <pre>SELECT *
  FROM weather;</pre>
    <footer>Copyright 2024</footer></body></html>"""
    text = html_to_text(html)
    assert text.startswith("Joins Between Tables\n\nQueries can access multiple tables at once.")
    assert (
        "SELECT *\n" in text
        and "Prev" not in text
        and "Copyright" not in text
        and "var x" not in text
    )


def test_mallard_parser_drops_info(tmp_path):
    page = tmp_path / "p.page"
    page.write_text(
        '<page xmlns="http://projectmallard.org/1.0/" id="x"><info><credit><name>A. Author'
        "</name></credit><license><p>CC-BY-SA</p></license></info><title>Wake the mouse</title>"
        "<p>Wireless mice\n  sleep to save power.</p></page>"
    )
    assert mallard_to_text(page) == "Wake the mouse\n\nWireless mice sleep to save power."


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="needs mandoc (make test installs it)")
def test_man_page_prose_without_options_or_boilerplate(tmp_path):
    page = tmp_path / "frob.1"
    page.write_text(
        ".TH FROB 1\n.SH NAME\nfrob \\- frobnicate files\n.SH SYNOPSIS\n.B frob\n[\\-v] file\n"
        ".SH DESCRIPTION\n.B frob\nreads each file and\nfrobnicates it in place.\n"
        ".SH OPTIONS\n.TP\n.B \\-v\nbe verbose\n.SH AUTHOR\nWritten by A. Hacker.\n"
    )
    text = man_to_text(page)
    assert text == "frob - frobnicate files\n\nfrob reads each file and frobnicates it in place."


def test_fortunes_dictd_and_wordnet_fixtures(tmp_path):
    f = tmp_path / "wisdom"
    cookies = [f"Cookie number {i} says something wise about life and code." for i in range(25)]
    f.write_text("\n%\n".join(cookies) + "\n%\n")
    docs = fortune_documents([f])
    assert len(docs) == 3 and docs[0].count("Cookie") == 10
    # dictd: index lines "word<TAB>offset<TAB>length" in base64 digits, data gzip-compressed
    entries = ["Apple\n  A round fruit of the apple tree, red or green or yellow.\n"] * 1
    entries += [
        f"Word{i}\n  Meaning {i} of a word that is long enough to count as text.\n"
        for i in range(39)
    ]
    blob, index, off = b"", [], 0
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def enc(n):
        return (b64[n // 64 // 64 % 64] + b64[n // 64 % 64] + b64[n % 64]).lstrip("A") or "A"

    for i, e in enumerate(entries):
        data = e.encode()
        index.append(f"w{i}\t{enc(off)}\t{enc(len(data))}")
        blob += data
        off += len(data)
    (tmp_path / "d.index").write_text("\n".join(index) + "\n")
    with gzip.open(tmp_path / "d.dict.dz", "wb") as fh:
        fh.write(blob)
    docs = dictd_entries(tmp_path / "d.index", tmp_path / "d.dict.dz", every=1)
    assert len(docs) == 2 and docs[0].startswith("Apple A round fruit")
    assert docs[1].endswith("Meaning 38 of a word that is long enough to count as text.")
    wn = tmp_path / "wn"
    wn.mkdir()
    (wn / "data.noun").write_text(
        "  1 This software and database is being provided\n"
        "00001740 03 n 02 entity 0 thing 0 000 | that which is perceived to have its own existence\n"
    )
    assert wordnet_glosses(wn) == [
        "entity, thing (noun): that which is perceived to have its own existence"
    ]


def test_split_long_cuts_at_paragraphs():
    text = "\n\n".join(f"para {i} " + "x" * 90 for i in range(10))
    pieces = split_long(text, max_chars=300)
    assert "\n\n".join(pieces) == text
    assert all(len(p) <= 300 for p in pieces)
