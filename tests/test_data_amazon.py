"""The Amazon 2018 reviews loader (``amazon-reviews``): the real All Beauty 5-core file, the duplicate rule, and a
DataError naming the file, the line and the field for each kind of bad line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_datasets
from mtlrec.cli import main
from mtlrec.data import dataset_names, load_dataset
from mtlrec.data.amazon import load_amazon_reviews
from mtlrec.data.splits import leave_one_out
from mtlrec.errors import ConfigError, DataError


def real_file() -> Path | None:
    root = shared_datasets()
    path = None if root is None else root / "amazon2018-all-beauty-5core" / "All_Beauty_5.json.gz"
    return path if path is not None and path.is_file() else None


needs_real = pytest.mark.skipif(real_file() is None, reason="set MTLREC_DATA_DIR to the shared datasets")


def review(user: str, item: str, rating: float, time: int, text: str = "", summary: str = "") -> dict:
    return {"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": time, "reviewText": text,
            "summary": summary, "verified": True}  # fmt: skip


def write(path: Path, records: list[dict], compress: bool = False) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


GOOD = [
    review("u1", "a", 5.0, 300, "Lovely cream.", "Great"),
    review("u2", "a", 3.0, 100, "Fine", "OK"),
    review("u1", "b", 4.0, 200, "Smells nice"),
    review("u2", "b", 1.0, 400),
]


# -- the real file --------------------------------------------------------------------------------------------------
@needs_real
def test_real_all_beauty_5core() -> None:
    path = real_file()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    latest: dict[tuple[str, str], tuple[int, int]] = {}  # pair -> (time, line) of the review kept
    for line, r in enumerate(raw, 1):
        key = (r["reviewerID"], r["asin"])
        latest[key] = max(latest.get(key, (r["unixReviewTime"], line)), (r["unixReviewTime"], line))
    assert len(raw) == 5269 and len(raw) - len(latest) == 1177
    with pytest.warns(UserWarning, match="1,177 repeated"):
        ds = load_dataset("amazon-reviews", data_path=path)
    inter = ds.interactions
    assert (ds.n_users, ds.n_items, len(inter)) == (991, 85, len(latest)) == (991, 85, 4092)
    kept_lines = sorted(line for _, line in latest.values())  # the kept reviews, in file order
    expected = [raw[line - 1] for line in kept_lines]
    assert inter["user_id"].tolist() == [r["reviewerID"] for r in expected]
    assert inter["item_id"].tolist() == [r["asin"] for r in expected]
    assert inter["rating"].tolist() == [r["overall"] for r in expected]
    assert inter["timestamp"].tolist() == [r["unixReviewTime"] for r in expected]
    assert inter["rating"].between(1, 5).all() and inter["timestamp"].dtype == np.int64
    assert ds.has_timestamps and ds.has_ratings and ds.categories == [] and ds.name == "amazon-reviews"
    assert (ds.items["title"] == ds.items["item_id"]).all() and ds.items["year"].isna().all()
    assert ds.items["text"].str.len().between(1, 2000).all()
    assert ds.users.columns.tolist() == ["user_id", "text"] and ds.users["text"].str.len().max() <= 2000
    assert ds.sources["interactions"] == str(path)


@needs_real
def test_cli_data_info_prints_the_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info, pytest.warns(UserWarning, match="merged"):
        main(["data", "info", "amazon-reviews", "--data-path", str(real_file())])
        raise SystemExit(0)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "991 users, 85 items, 4,092 interactions" in out and "evaluated users" in out


# -- synthetic files ------------------------------------------------------------------------------------------------
def test_plain_and_gzip_read_the_same_whatever_the_name(tmp_path: Path) -> None:
    plain = load_amazon_reviews(write(tmp_path / "reviews.json", GOOD))
    gz = load_amazon_reviews(write(tmp_path / "reviews.json.gz", GOOD, compress=True))
    misnamed = load_amazon_reviews(write(tmp_path / "gz_named.json", GOOD, compress=True))  # magic bytes decide
    for ds in (gz, misnamed):
        assert ds.interactions.equals(plain.interactions) and ds.items.equals(plain.items)
    inter = plain.interactions
    assert inter[["user_id", "item_id"]].values.tolist() == [["u1", "a"], ["u2", "a"], ["u1", "b"], ["u2", "b"]]
    assert inter["rating"].tolist() == [5.0, 3.0, 4.0, 1.0] and inter["timestamp"].tolist() == [300, 100, 200, 400]
    assert plain.first_line == {"interactions": 1}  # no duplicates or blank lines: row r is line r + 1
    text = plain.items.set_index("item_id")["text"]
    assert text["a"] == "OK. Fine. Great. Lovely cream."  # oldest review first, summary before text
    assert text["b"] == "Smells nice."
    assert plain.users.set_index("user_id")["text"].to_dict() == {"u1": "Smells nice. Great. Lovely cream.",
                                                                  "u2": "OK. Fine."}  # fmt: skip


def test_duplicates_keep_the_latest_review(tmp_path: Path) -> None:
    records = [
        review("u1", "a", 2.0, 100, "first"),
        review("u1", "a", 4.0, 300, "latest"),  # kept: the latest time
        review("u1", "a", 5.0, 200, "middle"),
        review("u2", "a", 1.0, 50, "tie early line"),
        review("u2", "a", 3.0, 50, "tie later line"),  # kept: same time, later line
        review("u2", "b", 2.0, 60),
    ]
    with pytest.warns(UserWarning, match="3 repeated"):
        ds = load_amazon_reviews(write(tmp_path / "dups.json", records))
    inter = ds.interactions
    assert inter[["user_id", "item_id"]].values.tolist() == [["u1", "a"], ["u2", "a"], ["u2", "b"]]  # file order
    assert inter["rating"].tolist() == [4.0, 3.0, 2.0] and inter["timestamp"].tolist() == [300, 50, 60]
    assert ds.items.set_index("item_id")["text"]["a"] == "tie later line. latest."  # merged reviews' text goes
    assert ds.first_line == {}  # rows were dropped, so rows no longer map to lines


def test_blank_lines_and_text_cap(tmp_path: Path) -> None:
    long = [f"{'word ' * 100}{t}" for t in range(40)]  # ~500 characters each; newest first in the file
    records = [review(f"u{t}", "a", 5.0, 1000 - t, long[t]) for t in range(40)]
    path = tmp_path / "blank.json"
    path.write_text(json.dumps(records[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in records[1:]) + "\n")
    ds = load_amazon_reviews(path, max_text_chars=2000)
    assert len(ds.interactions) == 40 and ds.first_line == {}  # the blank line shifts rows against lines
    whole = " ".join(f"{long[t]}." for t in reversed(range(40)))  # every review, oldest first
    expected = whole[: whole.rfind(" ", 0, 2000)]  # cut at the last word boundary within 2000 characters
    assert ds.items["text"].iloc[0] == expected
    assert expected.index(" 39.") < expected.index(" 38.") < expected.index(" 37.") and " 35." not in expected
    assert ds.users.set_index("user_id")["text"]["u7"] == f"{long[7]}."


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"reviewerID": "u1", "asin": "a", "overall": 5.0', None, "invalid JSON"),
        ("[1, 2]", None, "expected a JSON object"),
        ('{"asin": "a", "overall": 5.0, "unixReviewTime": 1}', "reviewerID", "missing reviewerID"),
        ('{"reviewerID": "u1", "overall": 5.0, "unixReviewTime": 1}', "asin", "missing asin"),
        ('{"reviewerID": "u1", "asin": " ", "overall": 5.0, "unixReviewTime": 1}', "asin", "non-empty string"),
        ('{"reviewerID": "u1", "asin": "a", "unixReviewTime": 1}', "overall", "missing overall"),
        ('{"reviewerID": "u1", "asin": "a", "overall": "five", "unixReviewTime": 1}', "overall", "not a number"),
        ('{"reviewerID": "u1", "asin": "a", "overall": NaN, "unixReviewTime": 1}', "overall", "not a finite"),
        ('{"reviewerID": "u1", "asin": "a", "overall": Infinity, "unixReviewTime": 1}', "overall", "not a finite"),
        ('{"reviewerID": "u1", "asin": "a", "overall": 6, "unixReviewTime": 1}', "overall", "outside 1..5"),
        ('{"reviewerID": "u1", "asin": "a", "overall": 0.5, "unixReviewTime": 1}', "overall", "outside 1..5"),
        ('{"reviewerID": "u1", "asin": "a", "overall": 5.0}', "unixReviewTime", "missing unixReviewTime"),
        ('{"reviewerID": "u1", "asin": "a", "overall": 5.0, "unixReviewTime": 1.5}', "unixReviewTime", "whole"),
        ('{"reviewerID": "u1", "asin": "a", "overall": 5.0, "unixReviewTime": "09 1, 2016"}', "unixReviewTime",
         "whole"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("compress", [False, True])
def test_bad_line_names_file_line_and_field(
    line: str, field: str | None, message: str, compress: bool, tmp_path: Path
) -> None:
    path = tmp_path / ("bad_reviews.json.gz" if compress else "bad_reviews.json")
    data = (json.dumps(GOOD[0]) + "\n" + json.dumps(GOOD[1]) + "\n" + line + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataError, match=message) as info:
        load_dataset("amazon-reviews", data_path=path)
    text = str(info.value)
    assert str(path) in text and "line 3" in text and info.value.hint
    if field is not None:
        assert f"field '{field}'" in text


def test_bad_bytes_and_empty_files(tmp_path: Path) -> None:
    bad_utf8 = tmp_path / "latin.json"
    bad_utf8.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + b'{"reviewerID": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.json, line 2: not valid UTF-8"):
        load_amazon_reviews(bad_utf8)
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(("".join(json.dumps(r) + "\n" for r in GOOD * 50)).encode())[:-40])
    with pytest.raises(DataError, match=r"cut\.json\.gz, line \d+: cannot read the gzip stream"):
        load_amazon_reviews(cut)
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.json: file is empty"):
        load_amazon_reviews(empty)
    blank = tmp_path / "blank.json.gz"
    blank.write_bytes(gzip.compress(b"\n \n"))
    with pytest.raises(DataError, match=r"blank\.json\.gz: no reviews"):
        load_amazon_reviews(blank)
    with pytest.raises(DataError, match="file not found"):
        load_amazon_reviews(tmp_path / "missing.json")


def test_registry_and_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "amazon-reviews" in dataset_names()
    message = "dataset 'amazon-reviews' needs data_path: the reviews .json or .json.gz file (--data-path)"
    with pytest.raises(ConfigError) as info:
        load_dataset("amazon-reviews")
    assert str(info.value) == message
    with pytest.raises(ConfigError, match="only for 'generic'"):
        load_dataset("amazon-reviews", data_path=tmp_path / "r.json", items_path=tmp_path / "items.csv")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "info", "amazon-reviews"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_numbers_json_cannot_turn_into_floats(tmp_path: Path) -> None:
    """Found by fuzzing: an integer too large for a float ("overall": 10**400) raised OverflowError, one of over
    4,300 digits and arrays nested thousands deep raised ValueError/RecursionError instead of a DataError."""
    path = tmp_path / "r.json"
    for bad, what in [('"overall": 1' + "0" * 400, "rating 1000"), ('"overall": 1' + "0" * 5000, "invalid JSON"),
                      ('"x": ' + "[" * 100_000 + "]" * 100_000, "invalid JSON")]:  # fmt: skip
        path.write_text('{"reviewerID": "u", "asin": "a", "unixReviewTime": 1, "overall": 5}\n'
                        '{"reviewerID": "u", "asin": "b", "unixReviewTime": 2, ' + bad + "}\n")  # fmt: skip
        with pytest.raises(DataError) as info:
            load_amazon_reviews(path)
        assert "r.json, line 2" in str(info.value) and what in str(info.value)


def test_unpaired_surrogate_escapes(tmp_path: Path) -> None:
    """Found by fuzzing: "\\ud800" in an id or a review's text loaded as a lone surrogate, which UTF-8 cannot encode:
    splitting the dataset and caching text vectors then crashed with UnicodeEncodeError."""
    path = tmp_path / "r.json"
    good = '{"reviewerID": "v", "asin": "a", "overall": 4, "unixReviewTime": 2}\n'
    path.write_text(good + '{"reviewerID": "u", "asin": "a\\ud800", "overall": 5, "unixReviewTime": 1}\n')
    with pytest.raises(DataError, match=r"r.json, line 2, field 'asin': asin 'a\\ud800' holds an unpaired surrogate"):
        load_amazon_reviews(path)
    path.write_text(good + '{"reviewerID": "u", "asin": "a", "overall": 5, "unixReviewTime": 1, '
                           '"reviewText": "half \\udfff a pair"}\n')  # fmt: skip
    with pytest.warns(UserWarning, match="in the text of 1 review"):
        ds = load_amazon_reviews(path)
    assert ds.items["text"].tolist() == ["half \ufffd a pair."]
    leave_one_out(ds)
    ds.fingerprint()
