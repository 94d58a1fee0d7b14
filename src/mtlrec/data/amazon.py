"""Amazon Review Data (2018; Ni, Li & McAuley): one JSON object per line, gzipped or not.

Each line is a review ``{"reviewerID", "asin", "overall", "unixReviewTime", "summary", "reviewText", ...}``; the
loader reads the file as a stream (gzip is recognised by its magic bytes, not by the file name) and turns it into:

- **interactions**: user ``reviewerID``, item ``asin``, rating ``overall`` (1 to 5), timestamp ``unixReviewTime``
  (Unix seconds), in file order.
- **Duplicate rule.** The 2018 files repeat many (reviewer, asin) pairs (the All Beauty 5-core holds 1,177 repeats,
  mostly verbatim copies of one review). Each pair keeps its *latest* review by ``unixReviewTime``; on a tie, the
  one on the later line. The kept review stays at its own place in file order, and a warning says how many reviews
  were merged. (``data.on_duplicate`` applies to generic files only.)
- **items**: ``item_id`` and ``title`` are the asin (the review files carry no product metadata), ``categories``
  is empty and ``year`` unknown; ``text`` is the item's reviews, each as "summary. review text.", oldest first (by
  time, then line), joined and cut to ``max_text_chars`` (2,000) at a word boundary.
- **users**: ``user_id`` plus ``text``, the user's own reviews in the same form and order, cut the same way: the
  text a cold-start user model can read.

Honest caveat: review text is the only text these files have, so item and user texts are built from *all* kept
reviews, including the ones the temporal split later holds out for validation and test; their words can reach the
language model. Oldest-first order limits this: the held-out reviews are each user's latest, so they come last in
the texts and are the first to be cut by the length cap, but short texts (few or short reviews) include them.

A bad line raises a DataError naming the file, the line and the field: invalid JSON, a line that is not an object,
a missing or empty ``reviewerID``/``asin`` or one holding an unpaired surrogate escape (``"\\ud800"``), a missing,
non-numeric, non-finite or out-of-range ``overall``, a missing or non-integer ``unixReviewTime``, text that is not
UTF-8, a damaged gzip stream, or a file with no reviews.

**Repair.** An unpaired surrogate escape in ``summary`` or ``reviewText`` (half of a UTF-16 pair, which no text
encoder can take) becomes U+FFFD; a warning says how many reviews were repaired.
"""

from __future__ import annotations

import gzip
import json
import math
import warnings
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from mtlrec.data.dataset import Dataset
from mtlrec.data.readers import check_file
from mtlrec.errors import DataError

MAX_TEXT_CHARS = 2000
_GZIP_MAGIC = b"\x1f\x8b"
_FORMAT_HINT = "each line must be one JSON object as in the Amazon 2018 review files"
_SEP = " "  # between two reviews in a text; each review ends in . ! or ?


def load_amazon_reviews(
    path: str | Path, name: str = "amazon-reviews", *, max_text_chars: int = MAX_TEXT_CHARS
) -> Dataset:
    """Load an Amazon 2018 reviews file (``.json`` or ``.json.gz``); the module docstring gives every rule."""
    p = check_file(path)
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    times: list[int] = []
    lines: list[int] = []
    for line, record in _records(p):
        users.append(_id(record, "reviewerID", p, line))
        items.append(_id(record, "asin", p, line))
        ratings.append(_rating(record, p, line))
        times.append(_time(record, p, line))
        lines.append(line)
    if not lines:
        raise DataError("no reviews", path=p, hint="the file holds no JSON lines; pass an Amazon reviews file")

    frame = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "rating": np.asarray(ratings, dtype=np.float64),
            "timestamp": np.asarray(times, dtype=np.int64),
        }
    )
    order = np.argsort(frame["timestamp"].to_numpy(), kind="stable")  # by time, then by line
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    older = frame.iloc[order].duplicated(["user_id", "item_id"], keep="last").to_numpy()
    keep = np.ones(len(frame), dtype=bool)
    keep[order[older]] = False
    merged = int((~keep).sum())
    if merged:
        warnings.warn(
            f"{p}: {merged:,} repeated (reviewerID, asin) reviews merged; each pair keeps its latest review "
            "(by unixReviewTime, then by line)",
            stacklevel=2,
        )

    line_numbers = np.asarray(lines, dtype=np.int64)
    row_of_line = np.full(int(line_numbers[-1]) + 1, -1, dtype=np.int64)
    row_of_line[line_numbers[keep]] = np.flatnonzero(keep)
    item_texts, user_texts = _CappedTexts(max_text_chars), _CappedTexts(max_text_chars)
    repaired = 0
    for line, record in _records(p, only=row_of_line >= 0):  # second pass: the texts of the kept reviews
        row = int(row_of_line[line])
        if text := _review_text(record):
            if not _is_unicode(text):
                text, repaired = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), repaired + 1
            item_texts.add(items[row], int(rank[row]), text)
            user_texts.add(users[row], int(rank[row]), text)
    if repaired:
        warnings.warn(
            f"{p}: unpaired surrogate escapes (e.g. \\ud800) in the text of {repaired:,} review(s) became U+FFFD",
            stacklevel=2,
        )

    inter = frame.loc[keep].reset_index(drop=True)
    item_ids = pd.unique(inter["item_id"])
    user_ids = pd.unique(inter["user_id"])
    contiguous = not merged and len(lines) == int(line_numbers[-1])  # row r is line r + 1: no drops, no blank lines
    return Dataset(
        name=name,
        interactions=inter,
        items=pd.DataFrame(
            {
                "item_id": item_ids,
                "title": item_ids,
                "text": [item_texts.joined(i) for i in item_ids],
                "categories": [[] for _ in item_ids],
                "year": np.full(len(item_ids), np.nan),
            }
        ),
        users=pd.DataFrame({"user_id": user_ids, "text": [user_texts.joined(u) for u in user_ids]}),
        categories=[],
        has_timestamps=True,
        has_ratings=True,
        sources={"interactions": str(p), "items": str(p), "users": str(p)},
        first_line={"interactions": 1} if contiguous else {},
    )


# -- internals ------------------------------------------------------------------------------------------------------
class _CappedTexts:
    """Per id, the review texts that can still reach the first ``cap`` characters of its oldest-first text.

    Pieces arrive in file order with their rank in time order. Once an id holds more than twice ``cap`` characters,
    only the oldest pieces that fill ``cap`` are kept: a dropped piece is preceded by ``cap`` characters of older
    ones already, and later arrivals can only push it further back, so memory stays near ``cap`` per id.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.pieces: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
        self.size: defaultdict[str, int] = defaultdict(int)

    def add(self, key: str, rank: int, text: str) -> None:
        pieces = self.pieces[key]
        pieces.append((rank, text))
        self.size[key] += len(text) + len(_SEP)
        if self.size[key] > 2 * self.cap:
            pieces.sort()
            total = n = 0
            while total < self.cap:  # the oldest pieces that fill cap; more than 2 * cap are held, so they do
                total += len(pieces[n][1]) + len(_SEP)
                n += 1
            del pieces[n:]
            self.size[key] = total

    def joined(self, key: str) -> str:
        text = _SEP.join(piece for _, piece in sorted(self.pieces.get(key, ())))
        if len(text) <= self.cap:
            return text
        cut = text[: self.cap]
        space = cut.rfind(" ")
        return cut[:space] if space > 0 else cut


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def _records(path: Path, only: np.ndarray | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line, JSON object) for each non-blank line (with ``only``: the lines whose flag is set)."""
    number = 0
    with _open(path) as f:
        try:
            for raw in f:
                number += 1
                if only is not None and (number >= len(only) or not only[number]):
                    continue
                record = _parse(raw, path, number)
                if record is not None:
                    yield number, record
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"cannot read the gzip stream ({e})",
                path=path,
                line=number + 1,
                hint="the file is damaged or cut short; download it again",
            ) from None


def _parse(raw: bytes, path: Path, line: int) -> dict[str, Any] | None:
    """The line's JSON object, or None for a blank line."""
    try:
        text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"not valid UTF-8 text (byte 0x{raw[e.start : e.start + 1].hex()})",
            path=path,
            line=line,
            hint="the Amazon review files are UTF-8; re-download the file",
        ) from None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"invalid JSON: {e.msg} at column {e.colno}", path=path, line=line, hint=_FORMAT_HINT
        ) from None
    except (ValueError, RecursionError) as e:  # an integer of over 4,300 digits; arrays nested thousands deep
        raise DataError(f"invalid JSON: {e}", path=path, line=line, hint=_FORMAT_HINT) from None
    if not isinstance(record, dict):
        raise DataError(
            f"expected a JSON object, found {type(record).__name__}", path=path, line=line, hint=_FORMAT_HINT
        )
    return record


def _id(record: dict[str, Any], key: str, path: Path, line: int) -> str:
    value = record.get(key)
    if value is None:
        raise DataError(f"missing {key}", path=path, line=line, field=key, hint=f"every review needs its {key}")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DataError(
            f"{key} must be a non-empty string, found {value!r}", path=path, line=line, field=key, hint=_FORMAT_HINT
        )
    if isinstance(value, str) and not _is_unicode(value):
        raise DataError(
            f"{key} {value!r} holds an unpaired surrogate escape", path=path, line=line, field=key,
            hint="ids must be valid Unicode; fix the JSON escape (\\ud800 is half of a UTF-16 pair)",
        )  # fmt: skip
    return str(value)


def _is_unicode(text: str) -> bool:
    """False when ``text`` holds a lone surrogate (JSON "\\ud800" decodes to one; UTF-8 cannot encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _rating(record: dict[str, Any], path: Path, line: int) -> float:
    value = record.get("overall")
    hint = "'overall' is the star rating, a number from 1 to 5"
    if value is None:
        raise DataError("missing overall", path=path, line=line, field="overall", hint=hint)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{value!r} is not a number", path=path, line=line, field="overall", hint=hint)
    if isinstance(value, float) and not math.isfinite(value):  # an int is finite (and may be too big for a float)
        raise DataError(f"{value} is not a finite number", path=path, line=line, field="overall", hint=hint)
    if not 1 <= value <= 5:
        raise DataError(f"rating {value} is outside 1..5", path=path, line=line, field="overall", hint=hint)
    return float(value)


def _time(record: dict[str, Any], path: Path, line: int) -> int:
    value = record.get("unixReviewTime")
    hint = "'unixReviewTime' is the review time in whole Unix seconds, e.g. 1472688000"
    if value is None:
        raise DataError("missing unixReviewTime", path=path, line=line, field="unixReviewTime", hint=hint)
    if isinstance(value, float) and value.is_integer():  # 1.47e9 is still a whole second
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(
            f"{value!r} is not a whole number of seconds", path=path, line=line, field="unixReviewTime", hint=hint
        )
    if abs(value) >= 2**62:
        raise DataError(
            f"{value} is too large for a 64-bit timestamp", path=path, line=line, field="unixReviewTime", hint=hint
        )
    return value


def _review_text(record: dict[str, Any]) -> str:
    """The review as 'Summary. Review text.', whitespace runs made one space; empty when it has neither."""
    parts = []
    for key in ("summary", "reviewText"):
        value = record.get(key)
        if isinstance(value, str) and (words := " ".join(value.split())):
            parts.append(words if words[-1] in ".!?" else words + ".")
    return " ".join(parts)
