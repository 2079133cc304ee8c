"""Text hygiene for the SAE corpus: normalization, the hash split, near-duplicate detection
(MinHash LSH over word 5-grams, ``datasketch``) and language identification (``py3langid``)."""

from __future__ import annotations

import hashlib


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def is_heldout(text: str, frac: float) -> bool:
    """The train/held-out split: a fixed function of the text alone."""
    return int(text_hash(text)[:8], 16) / 0xFFFFFFFF < frac


def normalize(text: str) -> str:
    """Whitespace collapsed per line, blank-line runs cut to one, NFC; stripped."""
    import unicodedata

    lines = [" ".join(line.split()) if line.strip() else "" for line in text.splitlines()]
    out = "\n".join(lines)
    while "\n\n\n" in out:
        out = out.replace("\n\n\n", "\n\n")
    return unicodedata.normalize("NFC", out).strip()


def shingles(text: str, n: int = 5) -> set[bytes]:
    words = text.lower().split()
    if len(words) <= n:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def near_duplicates(docs: list[str], threshold: float = 0.8, num_perm: int = 64) -> set[int]:
    """Indices of documents whose estimated Jaccard similarity (word 5-grams, MinHash LSH) to an
    earlier document reaches ``threshold``; the first of each group is kept."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    dup: set[int] = set()
    for i, doc in enumerate(docs):
        mh = MinHash(num_perm=num_perm, seed=1)
        mh.update_batch(list(shingles(doc)))
        if lsh.query(mh):
            dup.add(i)
        else:
            lsh.insert(str(i), mh)
    return dup


def identify_language(texts: list[str]) -> list[str]:
    """ISO 639-1 code per text (``py3langid``, on its first 2,000 characters)."""
    import py3langid

    return [py3langid.classify(t[:2000])[0] for t in texts]
