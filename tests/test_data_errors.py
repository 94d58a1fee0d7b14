"""Every bad input gives one DataError line naming the file, the line (or row) and the field, plus a fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from mtlrec.data import load_generic, load_ml1m, load_ml100k, load_ml_csv
from mtlrec.errors import ConfigError, DataError

MINI_100K = Path(__file__).parent / "data" / "ml-100k-mini"


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def error(call: Callable[[], object]) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def assert_cites(message: str, file: str, line: int | None, field: str | None) -> None:
    assert file in message, message
    if line is not None:
        assert f"line {line}," in message or f"line {line}:" in message, message
    if field is not None:
        assert f"field '{field}'" in message, message


@pytest.mark.parametrize(
    ("body", "line", "field", "what"),
    [
        ("user_id,item_id,rating\nu,a,4\nu,b,abc\n", 3, "rating", "'abc' is not a number"),
        ("user_id,item_id,rating\nu,a,4\nu,b,\n", 3, "rating", "missing"),
        ("user_id,item_id,rating\nu,a,NaN\n", 2, "rating", "NaN"),
        ("user_id,item_id,timestamp\nu,a,1\nu,b,inf\n", 3, "timestamp", "infinite"),
        ("user_id,item_id,timestamp\nu,a,1\nu,b,2020-01-01\n", 3, "timestamp", "not a number"),
        ("user_id,item_id,timestamp\nu,a,1\nu,b,1e30\n", 3, "timestamp", "too large"),
        ("user_id,item_id\nu,a\n,b\n", 3, "user_id", "missing value"),
        ("user_id,item_id,rating\nu,a,1\nu,b\n", 3, "rating", "missing"),  # too few fields
        ("user_id,item_id\nu,a\n\nu,b\n", 3, "user_id", "blank line"),
        ("user_id,item_id\nu,a\nv,b\nu,a\n", 4, "item_id", "already appear together on line 2"),
        ("user_id,item_id\nu,a\n   ,b\n", 3, "user_id", "the id is only spaces"),
        ("user_id,item_id\nu,a\nu, a\n", 3, "item_id", "already appear together on line 2"),  # ' a' is 'a'
    ],
)
@pytest.mark.filterwarnings("ignore:.*have spaces around them")  # ' a' is read as 'a', with a warning tested below
def test_bad_values_cite_line_and_field(tmp_path: Path, body: str, line: int, field: str, what: str) -> None:
    path = write(tmp_path / "events.csv", body)
    message = error(lambda: load_generic(path))
    assert_cites(message, "events.csv", line, field)
    assert what in message


def test_trailing_blank_lines_are_fine(tmp_path: Path) -> None:
    assert load_generic(write(tmp_path / "e.csv", "user_id,item_id\nu,a\n\n\n")).n_items == 1


def test_too_many_fields(tmp_path: Path) -> None:
    message = error(lambda: load_generic(write(tmp_path / "e.csv", "user_id,item_id\nu,a\nu,b,7\n")))
    assert_cites(message, "e.csv", 3, None)
    assert "expected 2 fields, found 3" in message


def test_unclosed_quote(tmp_path: Path) -> None:
    message = error(lambda: load_generic(write(tmp_path / "e.csv", 'user_id,item_id\nu,a\nu,"b\nv,c\n')))
    assert_cites(message, "e.csv", 3, None)
    assert "quote" in message


def test_missing_column_lists_header_and_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "customer,sku\nu,a\n")
    message = error(lambda: load_generic(path))
    assert_cites(message, "e.csv", 1, "user_id")
    assert "the header has: customer, sku" in message and "columns={'user_id'" in message
    message = error(lambda: load_generic(path, columns={"user_id": "customer", "item_id": "product"}))
    assert "column 'product' (for item_id) not found" in message


def test_wrong_encoding_cites_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title\n1,One\n2,Caf\xe9 Society\n".encode("latin-1"))
    inter = write(tmp_path / "e.csv", "user_id,item_id\nu,1\n")
    message = error(lambda: load_generic(inter, items_path=path))
    assert_cites(message, "items.csv", 3, "title")
    assert "utf-8" in message and "latin-1" in message
    assert load_generic(inter, items_path=path, encoding="latin-1").items["title"].iloc[1] == "Café Society"


def test_encoding_error_far_into_a_big_file(tmp_path: Path) -> None:
    rows = "".join(f"u{k},i{k}\n" for k in range(50_000))
    path = write(tmp_path / "big.csv", ("user_id,item_id\n" + rows).encode() + b"u,\xff\n")
    assert_cites(error(lambda: load_generic(path)), "big.csv", 50_002, "item_id")


def test_missing_and_empty_files(tmp_path: Path) -> None:
    message = error(lambda: load_generic(tmp_path / "nope.csv"))
    assert "nope.csv" in message and "file not found" in message
    assert "empty" in error(lambda: load_generic(write(tmp_path / "empty.csv", "")))
    assert_cites(error(lambda: load_generic(write(tmp_path / "h.csv", "user_id,item_id\n"))), "h.csv", 2, None)
    message = error(lambda: load_ml1m(tmp_path))
    assert ".dat: file not found" in message and "mtlrec data download ml-1m" in message


def test_interaction_with_unknown_item_or_user(tmp_path: Path) -> None:
    inter = write(tmp_path / "e.csv", "user_id,item_id\nu,a\nv,zz\n")
    items = write(tmp_path / "items.csv", "item_id,title\na,A\n")
    message = error(lambda: load_generic(inter, items_path=items))
    assert_cites(message, "e.csv", 3, "item_id")
    assert "'zz' is not in the items table" in message and "items.csv" in message
    users = write(tmp_path / "users.csv", "user_id\nu\n")
    assert_cites(error(lambda: load_generic(inter, users_path=users)), "e.csv", 3, "user_id")
    # Checked before duplicates are dropped, so the line is still the file's line.
    dup = write(tmp_path / "d.csv", "user_id,item_id\nu,a\nu,a\nv,zz\n")
    assert_cites(error(lambda: load_generic(dup, items_path=items, on_duplicate="last")), "d.csv", 4, "item_id")


def test_repeated_ids_in_items_table(tmp_path: Path) -> None:
    inter = write(tmp_path / "e.csv", "user_id,item_id\nu,a\n")
    items = write(tmp_path / "items.csv", "item_id,title\na,A\nb,B\na,again\n")
    message = error(lambda: load_generic(inter, items_path=items))
    assert_cites(message, "items.csv", 4, "item_id")
    assert "already appears on line 2" in message


def test_parquet_errors_cite_rows(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pd.DataFrame({"user_id": ["u", "v"], "item_id": ["a", "b"], "rating": ["4", "bad"]}).to_parquet(path)
    message = error(lambda: load_generic(path))
    assert_cites(message, "e.parquet", None, "rating")
    assert "(row 2)" in message
    assert "Parquet" in error(lambda: load_generic(write(tmp_path / "x.parquet", "not parquet")))


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="valid keys"):
        load_generic("x.csv", columns={"user": "u"})


def test_bad_on_duplicate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="on_duplicate"):
        load_generic(write(tmp_path / "e.csv", "user_id,item_id\nu,a\n"), on_duplicate="keep")


def copy_100k(tmp_path: Path) -> Path:
    for f in MINI_100K.glob("u.*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


def test_movielens_duplicate_rating(tmp_path: Path) -> None:
    root = copy_100k(tmp_path)
    with open(root / "u.data", "a") as f:
        f.write("2\t3\t5\t891717799\n")
    message = error(lambda: load_ml100k(root))
    assert_cites(message, "u.data", 7, "item_id")
    assert "line 4" in message and "re-download" in message


def test_movielens_bad_rating_and_genre_flag(tmp_path: Path) -> None:
    root = copy_100k(tmp_path)
    (root / "u.data").write_text("1\t1\t5\t881250949\n1\t2\tfive\t881250950\n")
    assert_cites(error(lambda: load_ml100k(root)), "u.data", 2, "rating")
    root = copy_100k(tmp_path)
    raw = (root / "u.item").read_bytes().replace(b"|0|0|0|1|1|1|", b"|0|0|0|2|1|1|", 1)
    (root / "u.item").write_bytes(raw)
    assert_cites(error(lambda: load_ml100k(root)), "u.item", 1, "Animation")


def test_movielens_unknown_item(tmp_path: Path) -> None:
    root = copy_100k(tmp_path)
    with open(root / "u.data", "a") as f:
        f.write("1\t99\t5\t891717799\n")
    message = error(lambda: load_ml100k(root))
    assert_cites(message, "u.data", 7, "item_id")
    assert "'99' is not in the items table" in message


def test_movielens_rating_out_of_range(tmp_path: Path) -> None:
    """Found by fuzzing: negative or 1e18-star ratings in a MovieLens file loaded silently."""
    root = copy_100k(tmp_path)
    (root / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t-1\t881250950\n")
    message = error(lambda: load_ml100k(root))
    assert_cites(message, "u.data", 2, "rating")
    assert "rating -1 is outside 0.5..5" in message


def test_movielens_genre_named_like_an_item_column(tmp_path: Path) -> None:
    """Found by fuzzing: a genre named 'title' in u.genre made pandas raise "Duplicate names are not allowed"."""
    root = copy_100k(tmp_path)
    (root / "u.genre").write_bytes((root / "u.genre").read_bytes().replace(b"Action|1", b"title|1"))
    message = error(lambda: load_ml100k(root))
    assert_cites(message, "u.genre", 2, "genre")
    assert "genre 'title' has the name of a u.item column" in message


def test_double_colon_files(tmp_path: Path) -> None:
    write(tmp_path / "movies.dat", "1::Toy Story (1995)::Comedy\n2 Toy Story 2 (1999)\n")
    write(tmp_path / "users.dat", "1::F::1::10::48067\n")
    write(tmp_path / "ratings.dat", "1::1::5::978300760\n1::2::3::978302109::9\n")
    message = error(lambda: load_ml1m(tmp_path))
    assert_cites(message, "ratings.dat", 2, None)
    assert "expected 4 fields, found 5" in message
    write(tmp_path / "ratings.dat", "1::1::5::978300760\n1::2:3::978302109\n")
    assert_cites(error(lambda: load_ml1m(tmp_path)), "ratings.dat", 2, None)
    write(tmp_path / "ratings.dat", "1::1::5::978300760\n")
    assert_cites(error(lambda: load_ml1m(tmp_path)), "movies.dat", 2, "item_id")


def test_csv_release_missing_column(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,stars,timestamp\n1,1,4,5\n")
    message = error(lambda: load_ml_csv(tmp_path, name="ml-32m"))
    assert_cites(message, "ratings.csv", 1, "rating")


def test_messages_stay_short_and_on_one_line(tmp_path: Path) -> None:
    """Found by fuzzing: a 1 MB header was quoted whole in the message, and a quoted value holding a line break
    split the message over two lines."""
    message = error(lambda: load_generic(write(tmp_path / "e.csv", "x" * (1 << 20) + ",item_id\nu,a\n")))
    assert_cites(message, "e.csv", 1, "user_id")
    assert len(message) < 1000 and "…" in message
    message = error(lambda: load_generic(write(tmp_path / "r.csv", 'user_id,item_id,rating\nu,a,"4\n5"\n')))
    assert_cites(message, "r.csv", 2, "rating")
    assert "'4\\n5' is not a number" in message


def test_data_errors_survive_pickling() -> None:
    """Errors cross process boundaries (parallel runs) with their parts and message intact."""
    import pickle

    original = DataError("bad " * 100, path="/data/e.csv", line=3, field="rating", hint="fix it")
    again = pickle.loads(pickle.dumps(original))
    assert str(again) == str(original) and (again.path, again.line, again.field) == ("/data/e.csv", 3, "rating")


# -- found by fuzzing (tests/test_fuzz_loaders.py) -------------------------------------------------------------------
def test_unknown_encoding_and_bad_separator_are_config_errors(tmp_path: Path) -> None:
    """An unknown or non-text encoding (LookupError) and a separator pandas cannot use (ValueError) escaped."""
    path = write(tmp_path / "e.csv", "user_id,item_id\nu,a\n")
    for encoding in ("nope", "rot13", "base64"):
        with pytest.raises(ConfigError, match=f"encoding: '{encoding}' is not a text encoding"):
            load_generic(path, encoding=encoding)
    for sep in ("", "::", "\n", "é"):  # pandas' C parser takes one byte of UTF-8: 'é' raised ValueError too
        with pytest.raises(ConfigError, match="sep: a one-character ASCII field separator"):
            load_generic(path, sep=sep)


def test_utf16_file_without_byte_order_mark(tmp_path: Path) -> None:
    """A UnicodeError that is not a UnicodeDecodeError ("UTF-16 stream does not start with BOM") escaped."""
    path = write(tmp_path / "e.csv", "user_id,item_id\nu,a\n")
    assert "not valid utf-16 text" in error(lambda: load_generic(path, encoding="utf-16"))
    path = write(tmp_path / "w.csv", "user_id,item_id\nu,a\nv,\udcff\n".encode("utf-16", "surrogatepass"))
    assert_cites(error(lambda: load_generic(path, encoding="utf-16")), "w.csv", 3, None)


def test_a_column_named_twice_in_the_header(tmp_path: Path) -> None:
    """pandas renamed the second 'user_id' to 'user_id.1' and the loader silently read the first one."""
    message = error(lambda: load_generic(write(tmp_path / "e.csv", "user_id,item_id,user_id\nu,a,v\n")))
    assert_cites(message, "e.csv", 1, "user_id")
    assert "appears twice in the header (fields 1 and 3)" in message
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "e.parquet"
    columns = [pa.array(["u"]), pa.array(["a"]), pa.array(["b"])]
    pq.write_table(pa.Table.from_arrays(columns, names=["user_id", "item_id", "item_id"]), path)
    assert "appears twice in the Parquet schema" in error(lambda: load_generic(path))


def test_damaged_parquet_pages(tmp_path: Path) -> None:
    """A file whose footer is intact but whose pages are damaged raised OSError/ArrowInvalid when read."""
    path = tmp_path / "e.parquet"
    pd.DataFrame({"user_id": ["u"] * 100, "item_id": [str(i) for i in range(100)]}).to_parquet(path)
    raw = bytearray(path.read_bytes())
    raw[4:8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(raw))
    message = error(lambda: load_generic(path))
    assert "e.parquet" in message and "not a readable Parquet file" in message


def test_parquet_ids_of_any_type_read_as_plain_text(tmp_path: Path) -> None:
    """Binary ids raised UnicodeDecodeError, float ids beyond 2^63 a TypeError, and categorical ids stayed
    categorical (not the plain strings every loader returns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"user_id": pa.array([1e300, 2.0]), "item_id": pa.array(["a", "b"]).dictionary_encode()}),
                   path)  # fmt: skip
    ds = load_generic(path)
    assert ds.interactions["user_id"].tolist() == ["1e+300", "2"] and ds.interactions["item_id"].tolist() == ["a", "b"]
    assert all(type(v) is str for v in ds.interactions["item_id"])
    pq.write_table(pa.table({"user_id": pa.array([b"u", b"\xff"]), "item_id": ["a", "b"]}), path)
    message = error(lambda: load_generic(path))
    assert_cites(message, "e.parquet", None, "user_id")
    assert "is not UTF-8 text (row 2)" in message


def test_parquet_date_time_timestamps_are_unix_seconds(tmp_path: Path) -> None:
    """A date-time column was read as microseconds (or nanoseconds) since 1970, silently 10^6 times too large."""
    path = tmp_path / "e.parquet"
    when = pd.DatetimeIndex([pd.Timestamp("2020-01-01 00:00:00.9"), pd.Timestamp("2020-01-02")]).as_unit("us")
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": when}).to_parquet(path)
    assert load_generic(path).interactions["timestamp"].tolist() == [1577836800, 1577923200]
    paris = when[:1].tz_localize("Europe/Paris")
    pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": paris}).to_parquet(path)
    assert load_generic(path).interactions["timestamp"].tolist() == [1577836800 - 3600]


def test_parquet_columns_pandas_cannot_show_as_text(tmp_path: Path) -> None:
    """Found by fuzzing: an id column of far-future UTC timestamps raised NotImplementedError, dates before year 1 a
    ValueError, and an encoding name holding a NUL a ValueError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"user_id": pa.array([2**50], pa.timestamp("s", tz="UTC")), "item_id": ["a"]}), path)
    assert_cites(error(lambda: load_generic(path)), "e.parquet", None, "user_id")
    pq.write_table(pa.table({"user_id": ["u"], "item_id": pa.array([-(2**20)], pa.date32())}), path)
    assert "not a readable Parquet file (year -901 is out of range)" in error(lambda: load_generic(path))
    with pytest.raises(ConfigError, match="is not a text encoding"):
        load_generic(write(tmp_path / "e.csv", "user_id,item_id\nu,a\n"), encoding="utf\x008")


def test_spaces_around_ids_are_dropped_with_a_warning(tmp_path: Path) -> None:
    """' u1' and 'u1' were two users (and ' i1' an item missing from the items table): ids are read without the
    spaces around them, with a warning naming the first line, in every table of a generic dataset and in Parquet."""
    events = write(tmp_path / "events.csv", "user_id,item_id\nu1,i1\n u1,i2\nu2 ,i1\nu2,i2\n")
    items = write(tmp_path / "items.csv", "item_id,title\n i1,One\ni2,Two\n")
    social = write(tmp_path / "social.csv", "user_id,friend_id\nu1 , u2\n")
    with pytest.warns(UserWarning) as caught:
        ds = load_generic(events, items_path=items, social_path=social)
    messages = [str(w.message) for w in caught]
    assert any("events.csv: 2 user_id value(s) have spaces around them (first on line 3: ' u1')" in m
               for m in messages)
    assert any("items.csv: 1 item_id value(s)" in m and "line 2" in m for m in messages)
    assert ds.interactions["user_id"].tolist() == ["u1", "u1", "u2", "u2"]
    assert sorted(ds.users["user_id"]) == ["u1", "u2"] and sorted(ds.items["item_id"]) == ["i1", "i2"]
    assert ds.social.values.tolist() == [["u1", "u2"]]

    parquet = tmp_path / "events.parquet"
    cats = pd.Categorical(["a ", "a", " b", "b"])
    pd.DataFrame({"user_id": ["u", "v", "u", "v"], "item_id": cats}).to_parquet(parquet)
    with pytest.warns(UserWarning, match=r"2 item_id value\(s\) have spaces around them \(first on row 1: 'a '\)"):
        ds = load_generic(parquet)
    assert ds.interactions["item_id"].tolist() == ["a", "a", "b", "b"] and ds.n_items == 2


def test_parquet_true_false_numbers_are_refused(tmp_path: Path) -> None:
    """A boolean Parquet rating was read as 1.0/0.0 while "true" in a CSV file is refused: both are refused now."""
    for column in ("rating", "timestamp"):
        path = tmp_path / f"{column}.parquet"
        pd.DataFrame({"user_id": ["u", "v"], "item_id": ["a", "b"], column: [True, False]}).to_parquet(path)
        message = error(lambda path=path: load_generic(path))
        assert_cites(message, f"{column}.parquet", None, column)
        assert "a true/false column where numbers are expected" in message
