"""MovieLens title cleanup: the year moves out of the title and "Usual Suspects, The" reads "The Usual Suspects".

The language model embeds titles, so they should read the way people write them.
"""

from __future__ import annotations

import re

import pandas as pd

# Articles GroupLens moves to the end ("Postino, Il", "Avventura, L'"). Single letters other than "A" ("I", "O")
# are left out: as trailing words they are more often not articles.
ARTICLES = (
    "The", "A", "An", "Les", "La", "Le", "L'", "Il", "Lo", "Gli", "Das", "Der", "Die", "Den", "Det", "Het", "El",
    "Los", "Las", "Un", "Une", "Una", "Ein", "Eine",
)  # fmt: skip

# "Title (1995)", "Title (2006-2007)" (series), "Title (1995) (V)" (video release in ml-100k), trailing spaces.
_YEAR_RE = r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*(?:\(V\)\s*)?$"
_ARTICLE_RE = re.compile(r"^(?P<body>.+), (?P<article>" + "|".join(map(re.escape, ARTICLES)) + r")$")
_ALTS_RE = re.compile(r"^(?P<main>.*?)(?P<alts>(?:\s*\([^()]*\))*)$")  # main title, then "(alternate titles)"
_PAREN_RE = re.compile(r"\(([^()]*)\)")


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(clean title, year as float with NaN when absent) for each raw MovieLens title."""
    raw = titles.fillna("").astype(str).str.strip()
    parts = raw.str.extract(_YEAR_RE)
    has_year = parts["year"].notna()
    title = raw.where(~has_year, parts["title"])
    year = pd.to_numeric(parts["year"], errors="coerce").astype("float64")
    # Items number at most ~100k, so a per-title Python call is cheap (interactions never come here).
    return title.map(front_articles).astype(str), year


def front_articles(title: str) -> str:
    """Move trailing articles to the front, in the main title and in each alternate title in parentheses."""
    m = _ALTS_RE.match(title)
    if m is None:  # pragma: no cover - the pattern matches every string
        return title
    alts = _PAREN_RE.sub(lambda p: f"({_front(p.group(1))})", m.group("alts"))
    return _front(m.group("main")) + alts


def _front(text: str) -> str:
    m = _ARTICLE_RE.match(text)
    if m is None:
        return text
    article = m.group("article")
    space = "" if article.endswith("'") else " "  # "L'Avventura", not "L' Avventura"
    return f"{article}{space}{m.group('body')}"
