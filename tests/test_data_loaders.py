"""Loaders for every MovieLens format and the generic CSV/Parquet loader, on tiny files written here."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlrec.data import (
    DATASETS,
    Dataset,
    cache_dir,
    dataset_names,
    load_dataset,
    load_generic,
    load_ml1m,
    load_ml10m,
    load_ml100k,
    load_ml_csv,
    resolve_dataset_dir,
)
from mtlrec.errors import ConfigError, DataError

MINI_100K = Path(__file__).parent / "data" / "ml-100k-mini"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def item(ds: Dataset, item_id: str) -> dict:
    return ds.items.set_index("item_id").loc[item_id].to_dict()


def test_ml100k_format() -> None:
    ds = load_ml100k(MINI_100K)
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (6, 3, 4)
    assert ds.categories[:3] == ["Action", "Adventure", "Animation"] and "unknown" not in ds.categories
    assert len(ds.categories) == 18
    assert item(ds, "1") | {"categories": None} == {"title": "Toy Story", "text": "", "categories": None, "year": 1995}
    assert item(ds, "1")["categories"] == ["Animation", "Children's", "Comedy"]
    assert item(ds, "2")["title"] == "The Usual Suspects"
    assert item(ds, "3")["title"] == "Les Misérables"  # latin-1 byte 0xe9 decoded
    unknown = item(ds, "4")
    assert unknown["title"] == "unknown" and math.isnan(unknown["year"]) and unknown["categories"] == []
    assert ds.users.columns.tolist() == ["user_id", "age", "gender", "occupation", "zip"]
    assert ds.users["age"].dtype == np.int64 and ds.users["occupation"].iloc[0] == "technician"
    inter = ds.interactions
    assert inter["user_id"].iloc[0] == "1" and inter["rating"].dtype == np.float64
    assert inter["timestamp"].dtype == np.int64 and inter["timestamp"].iloc[0] == 881250949
    assert ds.has_timestamps and ds.has_ratings
    assert ds.first_line == {"interactions": 1, "items": 1, "users": 1}
    assert ds.sources["items"].endswith("u.item")


def ml_dat(root: Path, encoding: str, users: bool = True) -> Path:
    write(root / "ratings.dat", "1::10::5::978300760\n1::20::3.5::978302109\n2::10::4::978301968\n")
    movies = (
        "10::Toy Story (1995)::Animation|Children's|Comedy\n"
        "20::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
        "30::Cité des enfants perdus, La (1995)::(no genres listed)\n"
    )
    write(root / "movies.dat", movies, encoding)
    if users:
        write(root / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return root


def test_ml1m_latin1_and_users(tmp_path: Path) -> None:
    ds = load_ml1m(ml_dat(tmp_path, "latin-1"))
    assert item(ds, "30")["title"] == "La Cité des enfants perdus" and item(ds, "30")["categories"] == []
    assert item(ds, "20")["title"] == "Star Wars: Episode IV - A New Hope"  # ':' inside a title survives
    assert item(ds, "20")["year"] == 1977
    assert ds.categories == sorted(["Animation", "Children's", "Comedy", "Action", "Sci-Fi"])
    assert ds.users["occupation"].tolist() == ["K-12 student", "self-employed"]
    assert ds.users["age"].tolist() == [1, 56] and ds.users["gender"].tolist() == ["F", "M"]
    assert ds.interactions["rating"].tolist() == [5.0, 3.5, 4.0]


def test_ml10m_utf8_without_users_file(tmp_path: Path) -> None:
    ds = load_ml10m(ml_dat(tmp_path, "utf-8", users=False))
    assert item(ds, "30")["title"] == "La Cité des enfants perdus"
    assert ds.user_ids == ["1", "2"] and ds.users.columns.tolist() == ["user_id"]
    assert ds.name == "ml-10m" and "users" not in ds.sources


def test_ml_csv_release(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n")
    write(
        tmp_path / "movies.csv",
        "movieId,title,genres\n"
        '1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "2,Babylon 5 ,Sci-Fi\n"
        '3,"Ready Player One (2018) ",Action|IMAX\n'
        "4,Hyena Road,(no genres listed)\n",
    )
    ds = load_ml_csv(tmp_path, name="ml-25m")
    assert item(ds, "1")["title"] == "The American President" and item(ds, "1")["year"] == 1995
    assert item(ds, "2")["title"] == "Babylon 5" and math.isnan(item(ds, "2")["year"])
    assert item(ds, "3")["title"] == "Ready Player One" and item(ds, "3")["year"] == 2018
    assert item(ds, "4")["categories"] == [] and ds.n_items == 4  # unrated items stay
    assert ds.categories == ["Action", "Comedy", "Drama", "IMAX", "Romance", "Sci-Fi"]
    assert ds.first_line["interactions"] == 2 and ds.name == "ml-25m"


def test_generic_minimal_csv(tmp_path: Path) -> None:
    ds = load_generic(write(tmp_path / "clicks.csv", "user_id,item_id\nu1,a\nu2,b\nu1,b\n"))
    assert not ds.has_timestamps and not ds.has_ratings
    assert ds.interactions["timestamp"].tolist() == [0, 1, 2] and ds.interactions["rating"].isna().all()
    assert ds.items["title"].tolist() == ["a", "b"] and ds.items["categories"].tolist() == [[], []]
    assert ds.user_ids == ["u1", "u2"] and ds.name == "clicks" and ds.categories == []


def test_generic_mapping_items_users(tmp_path: Path) -> None:
    inter = write(tmp_path / "orders.tsv", "customer\tsku\tstars\twhen\nc1\t007\t5\t100\nc2\t008\t3.5\t90\n")
    items = write(
        tmp_path / "items.csv",
        'sku,title,text,categories\n007,"Spy, The",a film,Action| Thriller\n008,Other,,\n009,Unsold,,Drama\n',
    )
    users = write(tmp_path / "users.csv", "customer,country\nc1,DE\nc2,FR\n")
    columns = {"user_id": "customer", "item_id": "sku", "rating": "stars", "timestamp": "when"}
    ds = load_generic(inter, items_path=items, users_path=users, columns=columns | {"item_id": "sku"})
    assert ds.has_timestamps and ds.has_ratings
    assert ds.interactions["item_id"].tolist() == ["007", "008"]  # ids stay text: leading zeros kept
    assert ds.interactions["timestamp"].tolist() == [100, 90] and ds.interactions["rating"].tolist() == [5.0, 3.5]
    assert ds.n_items == 3 and item(ds, "007")["categories"] == ["Action", "Thriller"]
    assert item(ds, "008")["text"] == "" and ds.categories == ["Action", "Drama", "Thriller"]
    assert ds.users.to_dict("list") == {"user_id": ["c1", "c2"], "country": ["DE", "FR"]}
    assert ds.first_line == {"interactions": 2, "items": 2, "users": 2}


def test_generic_items_mapping_applies_to_items_table(tmp_path: Path) -> None:
    inter = write(tmp_path / "i.csv", "u,sku\n1,x\n")
    items = write(tmp_path / "items.csv", "item_id,name\nx,Thing\n")  # our own name works despite the mapping
    ds = load_generic(inter, items_path=items, columns={"user_id": "u", "item_id": "sku", "title": "name"})
    assert ds.items["title"].tolist() == ["Thing"]


def test_generic_parquet(tmp_path: Path) -> None:
    path = tmp_path / "inter.parquet"
    pd.DataFrame({"user_id": [1, 2, 2], "item_id": [10.0, 11.0, 10.0], "rating": [1, 2, 3]}).to_parquet(path)
    ds = load_generic(path)
    assert ds.user_ids == ["1", "2"] and ds.interactions["item_id"].tolist() == ["10", "11", "10"]
    assert ds.has_ratings and not ds.has_timestamps and "interactions" not in ds.first_line


def test_parquet_ids_stream_in_batches_into_the_same_dataset_as_csv(tmp_path: Path, monkeypatch) -> None:
    import mtlrec.data.readers as readers

    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({"user_id": [f"u{k}" for k in rng.integers(0, 30, n)], "item_id": rng.integers(0, 50, n),
                          "rating": rng.integers(1, 6, n).astype(float), "timestamp": np.arange(n) * 10})  # fmt: skip
    frame = frame.drop_duplicates(["user_id", "item_id"])
    frame.to_csv(tmp_path / "i.csv", index=False)
    frame.to_parquet(tmp_path / "i.parquet")
    monkeypatch.setattr(readers, "PARQUET_BATCH", 7)  # ids first seen in many different batches
    streamed, csv = load_generic(tmp_path / "i.parquet"), load_generic(tmp_path / "i.csv")
    assert isinstance(streamed.interactions["user_id"].dtype, pd.CategoricalDtype)  # 4 bytes a row, ids once
    assert streamed.user_ids == csv.user_ids and streamed.item_ids == csv.item_ids
    for a, b in zip(streamed.encoded_interactions(), csv.encoded_interactions(), strict=True):
        assert np.array_equal(a, b)
    assert streamed.fingerprint() == csv.fingerprint()
    assert streamed.interactions["item_id"].astype(str).tolist() == csv.interactions["item_id"].tolist()


def test_a_missing_id_in_parquet_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "gap.parquet"
    pd.DataFrame({"user_id": ["a", None, "b"], "item_id": ["x", "y", "z"]}).to_parquet(path)
    with pytest.raises(DataError, match="user_id") as info:
        load_generic(path)
    assert "row 2" in str(info.value) and "missing value" in str(info.value)


@pytest.mark.parametrize(("mode", "kept"), [("first", [1.0, 2.0]), ("last", [2.0, 3.0])])
def test_generic_on_duplicate(tmp_path: Path, mode: str, kept: list[float]) -> None:
    path = write(tmp_path / "d.csv", "user_id,item_id,rating\nu,a,1\nu,b,2\nu,a,3\n")
    ds = load_generic(path, on_duplicate=mode)
    assert sorted(ds.interactions["rating"].tolist()) == kept
    assert "interactions" not in ds.first_line  # rows were dropped, so row + first_line is no line any more


def test_load_dataset_registered_and_generic(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    (root / "ml-100k").mkdir(parents=True)
    for f in MINI_100K.glob("u.*"):
        (root / "ml-100k" / f.name).write_bytes(f.read_bytes())
    assert load_dataset("ml-100k", root).n_items == 4
    assert load_dataset("ml-100k", root / "ml-100k").n_items == 4  # the dataset folder itself also works
    generic = load_dataset("generic", data_path=write(tmp_path / "g.csv", "user_id,item_id\n1,2\n"))
    assert generic.n_items == 1
    with pytest.raises(DataError, match=r"mtlrec data download ml-1m.*--data-dir"):
        load_dataset("ml-1m", root)
    with pytest.raises(ConfigError, match="generic"):
        load_dataset("nope")
    with pytest.raises(ConfigError, match="data_path"):
        load_dataset("generic")


def test_registry_and_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    movielens = {"ml-100k", "ml-1m", "ml-10m", "ml-latest-small", "ml-25m", "ml-32m"}
    names = movielens | {"lastfm-2k"}
    assert set(DATASETS.names()) == names and set(dataset_names()) == names | {"amazon-reviews", "generic"}
    assert DATASETS.get("lastfm-2k").url == "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip"
    for name in movielens:
        spec = DATASETS.get(name)
        assert spec.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert spec.sha256 is not None and len(spec.sha256) == 64
    assert DATASETS.get("ml-10m").archive_folder == "ml-10M100K"
    for var in ("MTLREC_DATA_DIR", "MTLREC_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_dataset_dir("ml-1m") == tmp_path / "home" / ".cache" / "mtlrec" / "datasets" / "ml-1m"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "mtlrec"
    monkeypatch.setenv("MTLREC_CACHE_DIR", str(tmp_path / "c"))
    assert resolve_dataset_dir("ml-1m") == tmp_path / "c" / "datasets" / "ml-1m"
    monkeypatch.setenv("MTLREC_DATA_DIR", str(tmp_path / "env"))
    assert resolve_dataset_dir("ml-1m") == tmp_path / "env" / "ml-1m"
    assert resolve_dataset_dir("ml-1m", tmp_path / "arg") == tmp_path / "arg" / "ml-1m"


@pytest.mark.skipif(not os.environ.get("MTLREC_DATA_DIR"), reason="MTLREC_DATA_DIR is not set")
def test_real_ml100k() -> None:
    if not (Path(os.environ["MTLREC_DATA_DIR"]) / "ml-100k").is_dir():
        pytest.skip("no ml-100k under MTLREC_DATA_DIR")
    ds = load_dataset("ml-100k")
    assert (len(ds.interactions), ds.n_users, ds.n_items, len(ds.categories)) == (100000, 943, 1682, 18)
    toy = item(ds, "1")
    assert (toy["title"], toy["year"], toy["categories"]) == ("Toy Story", 1995, ["Animation", "Children's", "Comedy"])
    assert item(ds, "543")["title"] == "Les Misérables"
    assert item(ds, "12")["title"] == "The Usual Suspects"
    assert ds.interactions["rating"].between(1, 5).all() and ds.users["age"].dtype == np.int64


def test_generic_social_edges(tmp_path: Path) -> None:
    inter = tmp_path / "events.csv"
    inter.write_text("user_id,item_id\na,x\nb,y\nc,x\n")
    social = tmp_path / "friends.csv"
    social.write_text("user_id,friend_id\na,b\nb,a\nb,c\n")
    ds = load_generic(inter, social_path=social)
    assert ds.social is not None and ds.social.values.tolist() == [["a", "b"], ["b", "a"], ["b", "c"]]
    offsets, friends = ds.friend_graph()
    b = ds.user_ids.index("b")
    assert sorted(ds.user_ids[f] for f in friends[offsets[b] : offsets[b + 1]]) == ["a", "c"]
    social.write_text("user_id,friend_id\na,b\nb,zed\n")
    with pytest.raises(DataError) as info:
        load_generic(inter, social_path=social)
    message = str(info.value)
    assert "friends.csv" in message and "line 3" in message and "friend_id" in message and "'zed'" in message
