"""Last.fm-2K (HetRec 2011): the loader, its errors, its random leave-one-out, and its download over loopback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import shared_datasets
from mtlrec.cli import main
from mtlrec.data import load_dataset
from mtlrec.data.lastfm import CATEGORY_TAGS, load_lastfm
from mtlrec.data.splits import TEST, VALID, leave_one_out
from mtlrec.errors import DataError
from test_data_download import Server, make_zip, server  # noqa: F401 - the loopback server fixture

CRLF = "\r\n"


def mini_files() -> dict[str, bytes]:
    """A 4-user HetRec folder in the original format (tab-separated, headers, CRLF except artists.dat)."""
    listens = ["userID\tartistID\tweight", *(f"{u}\t{a}\t{100 * u + a}" for u in (2, 3, 4, 5) for a in (1, 2, 3, 4))]
    tagged = ["userID\tartistID\ttagID\tday\tmonth\tyear", "2\t1\t1\t1\t4\t2009", "3\t1\t1\t1\t4\t2009",
              "2\t1\t2\t1\t4\t2009", "2\t2\t2\t1\t4\t2009", "4\t3\t3\t1\t4\t2009"]  # fmt: skip
    artists = ["1\tMötley Crüe\tu\tp", "2\tABBA\tu\tp", "3\tBjörk\tu\tp", "4\tX\tu\tp"]
    return {
        "user_artists.dat": CRLF.join(listens).encode() + CRLF.encode(),
        "artists.dat": "".join(f"{r}\n" for r in ["id\tname\turl\tpictureURL", *artists]).encode(),  # LF, UTF-8
        "user_friends.dat": CRLF.join(["userID\tfriendID", "2\t3", "3\t2", "4\t5", "5\t4"]).encode() + b"\r\n",
        "user_taggedartists.dat": CRLF.join(tagged).encode() + b"\r\n",
        "tags.dat": CRLF.join(["tagID\ttagValue", "1\tHair Metal", "2\tpop", "3\ticelandic"]).encode("latin-1")
        + b"\r\n",
    }


def write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_mini_folder_loads(tmp_path: Path) -> None:
    ds = load_lastfm(write(tmp_path / "lfm", mini_files()))
    assert (ds.n_users, ds.n_items, len(ds.interactions), len(ds.social)) == (4, 4, 16, 4)
    assert ds.split == "random" and not ds.has_timestamps and not ds.has_ratings
    assert ds.interactions["weight"].tolist()[:2] == [201, 202]
    assert ds.interactions["rating"].isna().all()
    items = ds.items.set_index("item_id")
    assert items.loc["1", "title"] == "Mötley Crüe"
    # Three tags in all, so every tag is a category (vocabulary of CATEGORY_TAGS); none is left for the text.
    assert CATEGORY_TAGS >= 3 and ds.categories == ["hair metal", "icelandic", "pop"]
    assert items.loc["1", "categories"] == ["hair metal", "pop"] and items.loc["4", "categories"] == []
    assert items["text"].eq("").all()


def test_random_leave_one_out_is_seeded(tmp_path: Path) -> None:
    ds = load_lastfm(write(tmp_path / "lfm", mini_files()))
    first, again, other = leave_one_out(ds, 0), leave_one_out(ds, 0), leave_one_out(ds, 1)
    assert np.array_equal(first.items, again.items) and np.array_equal(first.role, again.role)
    assert (first.role == TEST).sum() == 4 and (first.role == VALID).sum() == 4
    held = lambda s: [tuple(s.items[s.offsets[u] : s.offsets[u + 1]][-2:]) for u in range(4)]  # noqa: E731
    assert held(first) != held(other)  # a different seed holds out other items
    # File order is not time: over many seeds the test item is not always the file's last row of the user.
    last_in_file = {int(s.items[s.offsets[u + 1] - 1]) for s in (leave_one_out(ds, k) for k in range(20)) for u in [0]}
    assert len(last_in_file) > 1


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("user_artists.dat", "6\t1\tlots\r\n", ["user_artists.dat", "line 18", "weight"]),
        ("user_artists.dat", "6\t1\t-5\r\n", ["line 18", "negative"]),
        ("user_artists.dat", "6\t9\t5\r\n", ["line 18", "artistID", "'9'"]),
        ("user_artists.dat", "2\t1\t6\r\n", ["line 18", "line 2"]),
        ("user_friends.dat", "userID\tfriendID\r\n2\t77\r\n", ["user_friends.dat", "line 2", "friendID", "'77'"]),
        ("user_friends.dat", "userID\tfriendID\r\n2\t2\r\n", ["line 2", "own friend"]),
        ("user_taggedartists.dat", "userID\tartistID\ttagID\tday\tmonth\tyear\r\n2\t1\t99\t1\t1\t2009\r\n",
         ["user_taggedartists.dat", "line 2", "tagID"]),
        ("artists.dat", "id\tname\turl\tpictureURL\n1\tA\tu\tp\n1\tB\tu\tp\n", ["artists.dat", "line 3"]),
        ("tags.dat", "tagID\r\n1\r\n", ["tags.dat", "tagValue"]),
    ],
)  # fmt: skip
def test_bad_files_name_file_line_and_field(tmp_path: Path, file: str, content: str, expected: list[str]) -> None:
    files = mini_files()
    # A bad listening row is appended to the 16 good ones (lines 2-17); other files are replaced whole.
    files[file] = files[file] + content.encode() if file == "user_artists.dat" else content.encode()
    with pytest.raises(DataError) as info:
        load_lastfm(write(tmp_path / "lfm", files))
    for part in expected:
        assert part in str(info.value)


def test_missing_file_says_how_to_get_it(tmp_path: Path) -> None:
    files = mini_files()
    del files["tags.dat"]
    with pytest.raises(DataError, match="mtlrec data download lastfm-2k"):
        load_lastfm(write(tmp_path / "lfm", files))


def test_download_of_top_level_zip(server: Server, tmp_path: Path) -> None:  # noqa: F811 - pytest fixture
    sha = make_zip(server.root / "lastfm.zip", mini_files() | {"readme.txt": b"hetrec"})
    from mtlrec.data import download

    folder = download("lastfm-2k", tmp_path, url=server.url("lastfm.zip"), sha256=sha, progress=False)
    assert folder == tmp_path / "hetrec2011-lastfm-2k" and (folder / "readme.txt").read_bytes() == b"hetrec"
    assert load_dataset("lastfm-2k", tmp_path).n_users == 4


def test_real_lastfm_matches_its_readme(capsys: pytest.CaptureFixture[str]) -> None:
    root = shared_datasets()
    if root is None:
        pytest.skip("shared datasets not available")
    ds = load_dataset("lastfm-2k", root)
    # readme.txt "Data statistics": 1892 users, 17632 artists, 92834 user-artist rows, 12717 x 2 friend rows.
    assert (ds.n_users, ds.n_items, len(ds.interactions), len(ds.social)) == (1892, 17632, 92834, 25434)
    assert len(ds.categories) == CATEGORY_TAGS and "rock" in ds.categories
    pairs = set(zip(ds.social["user_id"], ds.social["friend_id"], strict=True))
    assert all((f, u) in pairs for u, f in pairs)  # every friendship is listed in both directions
    split = leave_one_out(ds, 0)
    assert len(split.eval_users) == int((split.lengths >= 3).sum()) and len(split.eval_users) > 1850
    main(["data", "info", "lastfm-2k", "--data-dir", str(root)])
    out = capsys.readouterr().out
    assert "92,834 interactions" in out and "seeded random leave-one-out" in out
