"""Hostile files for every loader (hypothesis): each call returns a Dataset whose invariants hold, or raises a
DataError/ConfigError naming the file (and the line and field where there is one); never any other exception. The
CLI on hostile files exits 0 or 2, never with a traceback.

Every property runs twice: a fast, derandomized subset in the default run (270 examples, about 15 s), and a long run
marked `slow`. Hypothesis examples in the slow run (each test's SLOW count times its parameters):
    text formats 7 x 1,000 + Amazon 1,000 + Parquet 800 + loader options 300 + CLI 150 = 9,250
and tests/test_fuzz_config.py adds 2,300: 11,550 in all (each test asserts that it ran its count). The slow run also
sweeps every special value through the first fields of every file (4,560 loads).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlrec.data import Dataset, load_generic, load_ml1m, load_ml10m, load_ml100k, load_ml_csv
from mtlrec.data.amazon import load_amazon_reviews
from mtlrec.data.dataset import INTERACTION_COLUMNS
from mtlrec.data.lastfm import load_lastfm
from mtlrec.data.splits import leave_one_out
from mtlrec.errors import ConfigError, DataError

MINI_100K = Path(__file__).parent / "data" / "ml-100k-mini"
# Reproducible in CI: the same examples every run, no example database. `too_slow` is suppressed because a few
# examples write and parse multi-MB fields on purpose; `data_too_large` because mutation lists may be long.
FUZZ = {"deadline": None, "derandomize": True, "database": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}  # fmt: skip


def runs(fast: int, slow: int) -> list:
    """Parametrize a property over its example counts: the fast subset, and the long run marked `slow`."""
    return [pytest.param(fast, id=f"fast{fast}"), pytest.param(slow, id=f"slow{slow}", marks=pytest.mark.slow)]


def ran(examples: int, calls: list[int]) -> None:
    """Each property counts the examples it ran: the totals in the module docstring are what runs (`-rP` shows)."""
    print(f"{len(calls)} examples")
    assert len(calls) >= examples, f"hypothesis ran {len(calls)} of {examples} examples"


# -- valid files of every format ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Format:
    name: str
    files: dict[str, tuple[bytes, bytes]]  # file name -> (content, field separator)
    load: Callable[[Path], Dataset]
    headers: tuple[str, ...] = ()  # files whose first line is a header


def _lines(*rows: str, end: str = "\n", encoding: str = "utf-8") -> bytes:
    return "".join(r + end for r in rows).encode(encoding)


def _generic(root: Path) -> Dataset:
    return load_generic(root / "interactions.csv", items_path=root / "items.csv", users_path=root / "users.csv",
                        social_path=root / "social.csv")  # fmt: skip


_ML_RATINGS = ("1::1::5::978300760", "1::2::3::978302109", "2::1::4::978301968", "2::3::1::978301000")
FORMATS = [
    Format(
        "generic-csv",
        {
            "interactions.csv": (_lines("user_id,item_id,rating,timestamp", "u1,a,5,100", "u1,b,3.5,101",
                                        "u2,a,1,99", "u2,c,4,102"), b","),
            "items.csv": (_lines("item_id,title,text,categories,year", 'a,"Alpha, the first",x,Drama|War,1999',
                                 "b,Beta,,Comedy,", "c,Gamma,t,,2001"), b","),
            "users.csv": (_lines("user_id,age,city", "u1,20,Paris", "u2,,Oslo"), b","),
            "social.csv": (_lines("user_id,friend_id", "u1,u2", "u2,u1"), b","),
        },
        _generic,
        ("interactions.csv", "items.csv", "users.csv", "social.csv"),
    ),
    Format(
        "generic-tsv",
        {"events.tsv": (_lines("user_id\titem_id\ttimestamp", "u1\ta\t1", "u1\tb\t2", "u2\ta\t3"), b"\t")},
        lambda root: load_generic(root / "events.tsv"),
        ("events.tsv",),
    ),
    Format(
        "ml-100k",
        {f.name: (f.read_bytes(), b"\t" if f.name == "u.data" else b"|") for f in sorted(MINI_100K.glob("u.*"))},
        load_ml100k,
    ),
    Format(
        "ml-1m",
        {
            "ratings.dat": (_lines(*_ML_RATINGS), b"::"),
            "movies.dat": (_lines("1::Toy Story (1995)::Animation|Children's|Comedy",
                                  "2::Misérables, Les (1995)::Drama", "3::Heat: Part 2 (1995)::Action",
                                  encoding="latin-1"), b"::"),  # fmt: skip
            "users.dat": (_lines("1::F::1::10::48067", "2::M::56::16::70072"), b"::"),
        },
        load_ml1m,
    ),
    Format(
        "ml-10m",
        {
            "ratings.dat": (_lines("1::1::5::978300760", "1::2::0.5::978302109", "2::1::4.5::978301968"), b"::"),
            "movies.dat": (_lines("1::Toy Story (1995)::Animation|Comedy", "2::Amélie (2001)::(no genres listed)"),
                           b"::"),  # fmt: skip
        },
        load_ml10m,
    ),
    Format(
        "ml-csv",
        {
            "ratings.csv": (_lines("userId,movieId,rating,timestamp", "1,1,4.0,964982703", "1,2,4.5,964981247",
                                   "2,1,2.5,1445714835"), b","),  # fmt: skip
            "movies.csv": (_lines("movieId,title,genres", "1,Toy Story (1995),Adventure|Animation",
                                  '2,"American President, The (1995)",Comedy|Drama'), b","),  # fmt: skip
        },
        load_ml_csv,
        ("ratings.csv", "movies.csv"),
    ),
    Format(
        "lastfm",
        {
            "user_artists.dat": (_lines("userID\tartistID\tweight", "2\t1\t10", "2\t2\t5", "3\t1\t7", "4\t3\t1",
                                        end="\r\n"), b"\t"),  # fmt: skip
            "artists.dat": (_lines("id\tname\turl\tpictureURL", "1\tMötley Crüe\tu\tp", "2\tABBA\tu\tp",
                                   "3\tBjörk\tu\tp"), b"\t"),  # fmt: skip
            "user_friends.dat": (_lines("userID\tfriendID", "2\t3", "3\t2", end="\r\n"), b"\t"),
            "user_taggedartists.dat": (_lines("userID\tartistID\ttagID\tday\tmonth\tyear", "2\t1\t1\t1\t4\t2009",
                                              "3\t2\t2\t1\t4\t2009", end="\r\n"), b"\t"),  # fmt: skip
            "tags.dat": (_lines("tagID\ttagValue", "1\tHair Metal", "2\tpopé", end="\r\n", encoding="latin-1"),
                         b"\t"),  # fmt: skip
        },
        load_lastfm,
        ("user_artists.dat", "artists.dat", "user_friends.dat", "user_taggedartists.dat", "tags.dat"),
    ),
]


def test_the_valid_files_load(tmp_path: Path) -> None:
    """The fuzzers mutate these files, so each must load as it is."""
    for fmt in FORMATS:
        root = tmp_path / fmt.name
        write_files(root, {name: data for name, (data, _) in fmt.files.items()})
        check_dataset(fmt.load(root))
    check_dataset(load_amazon_reviews(write_files(tmp_path / "amz", {"r.json": amazon_bytes(AMAZON)}) / "r.json"))


# -- mutations ------------------------------------------------------------------------------------------------------
SPECIAL_VALUES = [
    "", " ", "NaN", "nan", "-nan", "NA", "null", "None", "inf", "-inf", "Infinity", "1e400",
    "-1e400", "-1", "-0", "0", "1.5", "0.5", "6", "1e18", "9223372036854775807",
    "9223372036854775808", "-9223372036854775809", "99999999999999999999999999999", "0x1F", "1_000",
    "True", "false", '"', '"open', 'a"b', "'", "\\", "::", ":", ",", "\t", "|", ";", "\x00",
    "\xa0", "\ufeff", "é", "日本", "\U0001f600", "\u2028", "1,5", "１２３", "[/x]", "[bold]",
    "1" + "0" * 5000, "item_id", "title", "user_id", "unknown", "userId", "movieId"
]  # fmt: skip
SPECIAL = st.sampled_from(SPECIAL_VALUES)
# Half the values are special ones; test_every_special_value_in_every_field sends each to each field besides.
HOSTILE_TEXT = st.one_of(SPECIAL, SPECIAL, SPECIAL, st.integers(min_value=-(2**80), max_value=2**80).map(str),
                         st.floats().map(repr), st.text(max_size=12))  # fmt: skip
HOSTILE = st.one_of(HOSTILE_TEXT.map(lambda s: s.encode()), st.binary(max_size=6))
ANY = st.integers(0, 10**6)  # a line, field or byte position, taken modulo what the file has
SEPARATORS = [b",", b";", b"\t", b"|", b"::", b":", b" ", b""]
PREFIXES = [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\n", b"\r\n", b" ", b"#"]
BYTE_OPS = [
    st.tuples(st.just("replace_all"), st.binary(max_size=200)),
    st.just(("empty",)),
    st.just(("header_only",)),
    st.tuples(st.just("truncate"), ANY),
    st.tuples(st.just("drop_line"), ANY),
    st.tuples(st.just("dup_line"), ANY),
    st.tuples(st.just("blank_line"), ANY),
    st.tuples(st.just("insert"), ANY, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("prefix"), st.sampled_from(PREFIXES)),
    st.tuples(st.just("newlines"), st.sampled_from([b"\r\n", b"\r", b"\n\n"])),
    st.tuples(st.just("reencode"), st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252"])),
    st.just(("no_final_newline",)),
]
FIELD_OPS = [
    st.tuples(st.just("set_field"), ANY, ANY, HOSTILE),
    st.tuples(st.just("set_field"), ANY, ANY, HOSTILE),  # twice: the most telling mutation is drawn more often
    st.tuples(st.just("drop_field"), ANY, ANY),
    st.tuples(st.just("extra_field"), ANY, HOSTILE),
    st.tuples(st.just("sep"), st.sampled_from(SEPARATORS), st.booleans(), ANY),
    st.tuples(st.just("dup_header"), ANY, ANY),
    st.tuples(st.just("huge"), ANY, ANY, st.sampled_from([1 << 16, 1 << 20, 3 << 20])),
]
OPS = st.one_of(*BYTE_OPS, *FIELD_OPS)


def split_lines(data: bytes) -> list[bytes]:
    """Lines without their '\\n' (a final newline gives no empty last line)."""
    lines = data.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def join_lines(lines: list[bytes], final: bool = True) -> bytes:
    return b"\n".join(lines) + (b"\n" if final and lines else b"")


def mutate(data: bytes, op: tuple, sep: bytes) -> bytes:
    """One hostile edit of a delimited text file."""
    kind, *args = op
    lines = split_lines(data)
    at = (lambda k: k % len(lines)) if lines else (lambda k: 0)
    if kind == "replace_all":
        return args[0]
    if kind == "empty":
        return b""
    if kind == "header_only":
        return join_lines(lines[:1])
    if kind == "truncate":
        return data[: args[0] % (len(data) + 1)]
    if kind == "insert":
        k = args[0] % (len(data) + 1)
        return data[:k] + args[1] + data[k:]
    if kind == "prefix":
        return args[0] + data
    if kind == "newlines":
        return data.replace(b"\n", args[0])
    if kind == "reencode":
        text = data.decode("utf-8") if _is_utf8(data) else data.decode("latin-1")
        return text.encode(args[0], errors="replace")
    if kind == "no_final_newline":
        return data.rstrip(b"\n")
    if not lines:
        return data
    if kind == "sep":
        new, everywhere, line = args
        for j in range(len(lines)) if everywhere else [at(line)]:
            lines[j] = lines[j].replace(sep, new)
        return join_lines(lines)
    i = at(args[0])
    if kind == "drop_line":
        del lines[i]
    elif kind == "dup_line":
        lines.insert(i, lines[i])
    elif kind == "blank_line":
        lines.insert(i, b"")
    elif kind == "extra_field":
        lines[i] += sep + args[1]
    else:
        fields = lines[i].split(sep)
        j = args[1] % len(fields)
        if kind == "set_field":
            fields[j] = args[2]
        elif kind == "drop_field":
            del fields[j]
        elif kind == "dup_header":
            head = lines[0].split(sep)
            head[args[0] % len(head)] = head[args[1] % len(head)]
            lines[0] = sep.join(head)
            return join_lines(lines)
        elif kind == "huge":
            fields[j] = (fields[j] or b"x") * (args[2] // max(1, len(fields[j])))
        lines[i] = sep.join(fields)
    return join_lines(lines)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- the properties every outcome must have -------------------------------------------------------------------------
# DataErrors at a line that need not name a field: the whole line is wrong, not one value.
LINE_PROBLEMS = ("expected ", "a quoted field is never closed", "fields must be separated", "not valid ",
                 "invalid JSON", "cannot read the gzip stream", "cannot parse the file", "no data rows")  # fmt: skip
MAX_MESSAGE = 1000  # characters beyond the file's path: a message quotes values, never whole MB-sized fields


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def outcome(call: Callable[[], Dataset], root: Path, text: bytes | None = None) -> Dataset | Exception:
    """The loader's result, or its DataError/ConfigError checked for what it must say; any other exception (the
    traceback a user would see) propagates and fails the test. ``text``: the uncompressed content of a gzipped
    file, whose lines an error counts."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a documented repair warns; the warning is not under test here
            ds = call()
    except (DataError, ConfigError) as e:
        check_error(e, root, text)
        return e
    check_dataset(ds)
    return ds


def check_error(error: Exception, root: Path, text: bytes | None = None) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    if not isinstance(error, DataError):
        assert len(message) <= MAX_MESSAGE, message[:300]
        return
    assert error.path is not None, message
    path = Path(error.path)
    assert path == root or path.parent == root, message
    assert str(path) in message, message
    assert len(message) <= MAX_MESSAGE + 2 * len(str(path)), message[:300]
    if error.line is not None:
        assert f"line {error.line}" in message
        content = text if text is not None else path.read_bytes() if path.is_file() else b""
        n_lines = len(re.split(rb"\r\n|\r|\n", content))
        past_end = error.problem.startswith("no data rows")  # the line below the header, where rows would start
        assert 1 <= error.line <= n_lines + past_end, f"line {error.line} of a {n_lines}-line file: {message}"
        assert error.field is not None or error.problem.startswith(LINE_PROBLEMS), message
    if error.field is not None:
        assert f"field '{error.field}'" in message


def check_dataset(ds: Dataset) -> None:
    """The invariants every loader promises (Dataset's docstring), and that the dataset can be split."""
    inter = ds.interactions
    assert list(inter.columns[:4]) == INTERACTION_COLUMNS and len(inter) > 0
    for frame, cols in ((inter, ["user_id", "item_id"]), (ds.items, ["item_id", "title", "text"]),
                        (ds.users, ["user_id"])):  # fmt: skip
        for col in cols:
            assert all(type(v) is str for v in frame[col]), (col, frame[col].head().tolist())
            "\x1f".join(frame[col]).encode("utf-8")  # no lone surrogates: text encoders and Arrow reject them
    assert inter["timestamp"].dtype == np.int64
    ratings = inter["rating"].to_numpy(dtype=np.float64)
    assert not np.isinf(ratings).any()
    assert (not np.isnan(ratings).any()) if ds.has_ratings else np.isnan(ratings).all()
    assert ds.items["item_id"].is_unique and ds.users["user_id"].is_unique
    assert inter["item_id"].isin(ds.items["item_id"]).all() and inter["user_id"].isin(ds.users["user_id"]).all()
    vocab = set(ds.categories)
    assert all(isinstance(c, list) and set(c) <= vocab for c in ds.items["categories"])
    assert ds.items["year"].dtype == np.float64 and not np.isinf(ds.items["year"]).any()
    if ds.social is not None:
        assert ds.social["user_id"].isin(ds.users["user_id"]).all()
        assert ds.social["friend_id"].isin(ds.users["user_id"]).all()
        ds.friend_graph()
    if "weight" in inter:
        assert np.isfinite(inter["weight"].to_numpy(dtype=np.float64)).all()
    split = leave_one_out(ds)
    assert len(split.items) == len(inter)
    ds.fingerprint()
    ds.category_matrix()
    ds.summary()


# -- delimited text formats -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
@pytest.mark.parametrize("examples", runs(25, 1000))
def test_hostile_text_files(fmt: Format, examples: int) -> None:
    names = sorted(fmt.files)

    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(target=st.sampled_from(names), ops=st.lists(OPS, min_size=1, max_size=3))
    def check(target: str, ops: list[tuple]) -> None:
        calls.append(1)
        data, sep = fmt.files[target]
        for op in ops:
            data = mutate(data, op, sep)
        files = {name: content for name, (content, _) in fmt.files.items()} | {target: data}
        with tempfile.TemporaryDirectory() as tmp:
            root = write_files(Path(tmp), files)
            outcome(lambda: fmt.load(root), root)

    check()
    ran(examples, calls)


SWEEP_FIELDS = 8  # the first fields of a line (u.item has 24, mostly alike genre flags)
SWEEP = [pytest.param(fmt, name, id=f"{fmt.name}-{name}") for fmt in FORMATS for name in sorted(fmt.files)]


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "target"), SWEEP)
def test_every_special_value_in_every_field(fmt: Format, target: str) -> None:
    """Each special value in each of the first fields of the first data row of each file: the combinations random
    draws reach rarely. 21 files, 4,560 loads in all."""
    data, sep = fmt.files[target]
    row = 1 if target in fmt.headers else 0
    n_fields = len(split_lines(data)[row].split(sep))
    files = {name: content for name, (content, _) in fmt.files.items()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for field in range(min(n_fields, SWEEP_FIELDS)):
            for value in SPECIAL_VALUES:
                write_files(root, files | {target: mutate(data, ("set_field", row, field, value.encode()), sep)})
                outcome(lambda: fmt.load(root), root)


# -- Amazon reviews (JSON lines, gzipped or not) --------------------------------------------------------------------
AMAZON = [
    {"reviewerID": "u1", "asin": "a", "overall": 5.0, "unixReviewTime": 300, "reviewText": "Lovely.", "summary": "A"},
    {"reviewerID": "u2", "asin": "a", "overall": 3.0, "unixReviewTime": 100, "reviewText": "Fine", "summary": "OK"},
    {"reviewerID": "u1", "asin": "b", "overall": 4.0, "unixReviewTime": 200, "reviewText": "Smells nice"},
    {"reviewerID": "u2", "asin": "b", "overall": 1.0, "unixReviewTime": 400, "verified": True},
]
AMAZON_KEYS = ["reviewerID", "asin", "overall", "unixReviewTime", "reviewText", "summary", "verified"]
JSON_TOKENS = st.one_of(
    st.sampled_from(["null", "true", "false", "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000,
                     "[]", "{}", '""', '" "', '"\\ud800"', '"\\u0000"', "0", "-1", "6", "5.0", "4.999", "1.5e9",
                     "99999999999999999999999", "1e18", '"5"', '"1472688000"', "[1, 2]", '{"a": 1}']),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(json.dumps),
    st.text(max_size=10).map(json.dumps),
)  # fmt: skip
JSON_OPS = st.one_of(
    st.tuples(st.just("json_set"), ANY, st.sampled_from([*AMAZON_KEYS, "extra"]), JSON_TOKENS),
    st.tuples(st.just("json_set"), ANY, st.sampled_from(["overall", "unixReviewTime", "reviewerID"]), JSON_TOKENS),
    st.tuples(st.just("json_del"), ANY, st.sampled_from(AMAZON_KEYS)),
    st.tuples(st.just("json_line"), ANY, st.one_of(JSON_TOKENS, st.sampled_from(["{", "}", '{"a"', "{'a': 1}"]))),
    *BYTE_OPS,
)


def amazon_line(tokens: dict[str, str]) -> bytes:
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in tokens.items()) + "}").encode()


def amazon_bytes(records: list[dict]) -> bytes:
    return b"".join(amazon_line({k: json.dumps(v) for k, v in r.items()}) + b"\n" for r in records)


def mutate_json(data: bytes, op: tuple) -> bytes:
    kind, *args = op
    if not kind.startswith("json_"):
        return mutate(data, op, b",")
    lines = split_lines(data)
    if not lines:
        return data
    i = args[0] % len(lines)
    if kind == "json_line":
        lines[i] = args[1].encode()
        return join_lines(lines)
    try:
        tokens = {k: json.dumps(v) for k, v in json.loads(lines[i]).items()}
    except (ValueError, AttributeError):  # an earlier mutation broke the line: leave it broken
        return data
    if kind == "json_set":
        tokens[args[1]] = args[2]
    else:
        tokens.pop(args[1], None)
    lines[i] = amazon_line(tokens)
    return join_lines(lines)


GZIP_OPS = st.sampled_from(["plain", "gzip", "gzip_cut", "gzip_flip"])


@pytest.mark.parametrize("examples", runs(30, 1000))
def test_hostile_amazon_reviews(examples: int) -> None:
    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(ops=st.lists(JSON_OPS, min_size=1, max_size=3), packing=GZIP_OPS, where=ANY)
    def check(ops: list[tuple], packing: str, where: int) -> None:
        calls.append(1)
        data = amazon_bytes(AMAZON)
        for op in ops:
            data = mutate_json(data, op)
        text = data
        if packing != "plain":
            data = gzip.compress(data)
            if packing == "gzip_cut":
                data = data[: where % len(data)]
            elif packing == "gzip_flip":
                k = 10 + where % (len(data) - 10)  # past the header: a damaged stream, still gzip
                data = data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1 :]
        with tempfile.TemporaryDirectory() as tmp:
            root = write_files(Path(tmp), {"reviews.json.gz": data})
            outcome(lambda: load_amazon_reviews(root / "reviews.json.gz"), root, text)

    check()
    ran(examples, calls)


# -- Parquet --------------------------------------------------------------------------------------------------------
def _arrow_column(kind: str, n: int, draw) -> object:  # -> pyarrow.Array
    import pyarrow as pa

    def values(strategy):
        return draw(st.lists(st.one_of(st.none(), strategy), min_size=n, max_size=n))

    ints = st.integers(-(2**63), 2**63 - 1)
    floats = st.floats(width=64)
    return {
        "string": lambda: pa.array(values(st.text(max_size=5)), pa.string()),
        "large_string": lambda: pa.array(values(st.text(max_size=5)), pa.large_string()),
        "dictionary": lambda: pa.array(values(st.sampled_from(["a", "b", "u1"])), pa.string()).dictionary_encode(),
        "binary": lambda: pa.array(values(st.binary(max_size=4)), pa.binary()),
        "int64": lambda: pa.array(values(ints), pa.int64()),
        "uint64": lambda: pa.array(values(st.integers(0, 2**64 - 1)), pa.uint64()),
        "int8": lambda: pa.array(values(st.integers(-128, 127)), pa.int8()),
        "float64": lambda: pa.array(values(floats), pa.float64()),
        "float32": lambda: pa.array(values(st.floats(width=32)), pa.float32()),
        "bool": lambda: pa.array(values(st.booleans()), pa.bool_()),
        "null": lambda: pa.nulls(n),
        "list": lambda: pa.array(values(st.lists(st.integers(-5, 5), max_size=2)), pa.list_(pa.int64())),
        "struct": lambda: pa.array(values(st.fixed_dictionaries({"x": st.integers(0, 3)})),
                                   pa.struct([("x", pa.int64())])),
        "timestamp": lambda: pa.array(values(st.integers(-(2**62), 2**62)), pa.timestamp("us")),
        "timestamp_tz": lambda: pa.array(values(st.integers(-(2**50), 2**50)), pa.timestamp("s", tz="UTC")),
        "date": lambda: pa.array(values(st.integers(-(2**20), 2**20)), pa.date32()),
        "duration": lambda: pa.array(values(st.integers(-(2**40), 2**40)), pa.duration("s")),
        "decimal": lambda: pa.array(values(st.decimals(-999, 999, places=2)), pa.decimal128(5, 2)),
    }[kind]()  # fmt: skip


ARROW_KINDS = ["string", "large_string", "dictionary", "binary", "int64", "uint64", "int8", "float64", "float32",
               "bool", "null", "list", "struct", "timestamp", "timestamp_tz", "date", "duration",
               "decimal"]  # fmt: skip


@st.composite
def hostile_parquet(draw) -> bytes:
    """A Parquet file whose columns have any Arrow type (ids as floats, timestamps as dates, nested values, nulls,
    repeated column names), or a valid file cut short or overwritten."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = draw(st.integers(0, 5))
    names = draw(st.lists(st.sampled_from([*INTERACTION_COLUMNS, "extra"]), min_size=1, max_size=6))
    if draw(st.booleans()):
        names = list(dict.fromkeys(["user_id", "item_id", *names]))  # usually the needed columns, once each
    arrays = [_arrow_column(draw(st.sampled_from(ARROW_KINDS)), n, draw) for _ in names]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=names), sink)
    data = sink.getvalue()
    damage = draw(st.sampled_from(["none", "none", "cut", "overwrite"]))
    if damage == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "overwrite":
        k = draw(st.integers(0, len(data) - 1))
        data = data[:k] + draw(st.binary(min_size=1, max_size=8)) + data[k + 8 :]
    return data


@pytest.mark.parametrize("examples", runs(30, 800))
def test_hostile_parquet(examples: int) -> None:
    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(data=hostile_parquet())
    def check(data: bytes) -> None:
        calls.append(1)
        with tempfile.TemporaryDirectory() as tmp:
            root = write_files(Path(tmp), {"events.parquet": data})
            outcome(lambda: load_generic(root / "events.parquet"), root)

    check()
    ran(examples, calls)


# -- loader options -------------------------------------------------------------------------------------------------
OPTION_TEXT = st.one_of(st.sampled_from(["", ",", ";", "\t", "::", "\n", '"', "\x00", "|", "\\s+", "utf-8", "latin-1",
                                         "utf-16", "utf-32", "ascii", "rot13", "base64", "nope", "idna", "cp1252",
                                         "user_id", "item_id", "error", "first", "last"]),
                        st.text(max_size=6))  # fmt: skip


@pytest.mark.parametrize("examples", runs(25, 300))
def test_hostile_loader_options(examples: int) -> None:
    """load_generic's own arguments: separators, encodings, column mappings, duplicate rules of any value."""

    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(
        sep=st.one_of(st.none(), OPTION_TEXT),
        encoding=OPTION_TEXT,
        columns=st.dictionaries(OPTION_TEXT, OPTION_TEXT, max_size=3),
        on_duplicate=OPTION_TEXT,
    )
    def check(sep: str | None, encoding: str, columns: dict[str, str], on_duplicate: str) -> None:
        calls.append(1)
        fmt = FORMATS[0]
        with tempfile.TemporaryDirectory() as tmp:
            root = write_files(Path(tmp), {name: data for name, (data, _) in fmt.files.items()})
            outcome(lambda: load_generic(root / "interactions.csv", items_path=root / "items.csv", sep=sep,
                                         encoding=encoding, columns=columns, on_duplicate=on_duplicate),
                    root)  # fmt: skip

    check()
    ran(examples, calls)


# -- the CLI --------------------------------------------------------------------------------------------------------
def cli(args: list[str]) -> tuple[int, str]:
    """``mtlrec ARGS`` in-process: (exit status, stderr). An exception that escapes main() fails the test: in a
    shell it would be a traceback."""
    from mtlrec.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
    return code, err.getvalue()


CLI_FORMATS = {"generic-csv": "generic", "ml-100k": "ml-100k", "ml-1m": "ml-1m", "ml-csv": "ml-latest-small",
               "lastfm": "lastfm-2k"}  # fmt: skip


@pytest.mark.parametrize("examples", runs(10, 150))
def test_cli_data_info_on_hostile_files(examples: int) -> None:
    formats = {f.name: f for f in FORMATS}

    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(fmt=st.sampled_from(sorted(CLI_FORMATS)), target=ANY, ops=st.lists(OPS, min_size=1, max_size=2))
    def check(fmt: str, target: int, ops: list[tuple]) -> None:
        calls.append(1)
        spec = formats[fmt]
        name = sorted(spec.files)[target % len(spec.files)]
        data, sep = spec.files[name]
        for op in ops:
            data = mutate(data, op, sep)
        with tempfile.TemporaryDirectory() as tmp:
            root = write_files(Path(tmp), {n: d for n, (d, _) in spec.files.items()} | {name: data})
            where = ["--data-path", str(root / "interactions.csv")] if fmt == "generic-csv" else ["--data-dir", tmp]
            code, err = cli(["data", "info", CLI_FORMATS[fmt], *where])
        assert code in (0, 2), err
        assert "Traceback" not in err
        if code == 2:
            assert err.startswith("error: ") and tmp in err, err

    check()
    ran(examples, calls)


@pytest.mark.parametrize(
    "args",
    [
        ["data", "info", "generic", "--data-path", "{tmp}/random.csv"],
        ["data", "info", "amazon-reviews", "--data-path", "{tmp}/random.csv"],
        ["train", "--output", "{tmp}/run", "--config", "{tmp}/random.csv"],
        ["train", "--output", "{tmp}/run", "--set", "train.epochs=[1"],
    ],
)
def test_cli_process_on_hostile_input_prints_no_traceback(tmp_path: Path, args: list[str]) -> None:
    """A real `mtlrec` process: exit status 2, one 'error:' line, no traceback."""
    import subprocess
    import sys

    (tmp_path / "random.csv").write_bytes(bytes(range(256)) * 4)
    cmd = [sys.executable, "-m", "mtlrec", *(a.format(tmp=tmp_path) for a in args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), done.stderr


# -- regressions: bugs the fuzzers found ----------------------------------------------------------------------------
