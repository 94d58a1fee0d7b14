"""download(): a zip served from 127.0.0.1 (never the internet), its checksum, safe and atomic unpacking."""

from __future__ import annotations

import functools
import hashlib
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mtlrec.data import DATASETS, download, load_dataset
from mtlrec.errors import DataError

MINI_100K = Path(__file__).parent / "data" / "ml-100k-mini"


class Server:
    def __init__(self, root: Path) -> None:
        self.root, self.requests = root, 0
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests += 1
                super().do_GET()

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    srv = Server(root)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def make_zip(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ml100k_members(folder: str = "ml-100k") -> dict[str, bytes]:
    members = {f"{folder}/{f.name}": f.read_bytes() for f in sorted(MINI_100K.glob("u.*"))}
    return members | {f"{folder}/README": b"readme", "__MACOSX/._u.data": b"junk"}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_download_unpacks_and_loads(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sha = make_zip(server.root / "ml-100k.zip", ml100k_members())
    dest = tmp_path / "data"
    folder = download("ml-100k", dest, url=server.url("ml-100k.zip"), sha256=sha, progress=True)
    assert folder == dest / "ml-100k" and (folder / "README").read_bytes() == b"readme"
    assert not (dest / "__MACOSX").exists() and leftovers(dest) == []
    assert "100%" in capsys.readouterr().err  # the tqdm bar ran to the end
    assert load_dataset("ml-100k", dest).n_items == 4
    # Already present: nothing is fetched again, even from a URL that would fail.
    requests = server.requests
    assert download("ml-100k", dest, url=server.url("missing.zip"), progress=False) == folder
    assert server.requests == requests


def test_archive_folder_is_renamed(server: Server, tmp_path: Path) -> None:
    members = {"ml-10M100K/ratings.dat": b"1::1::5::1\n", "ml-10M100K/movies.dat": b"1::Toy Story (1995)::Comedy\n"}
    sha = make_zip(server.root / "ml-10m.zip", members)
    folder = download("ml-10m", tmp_path, url=server.url("ml-10m.zip"), sha256=sha, progress=False)
    assert folder == tmp_path / "ml-10m"
    assert load_dataset("ml-10m", tmp_path).items["title"].tolist() == ["Toy Story"]


def test_checksum_mismatch_deletes_download(server: Server, tmp_path: Path) -> None:
    sha = make_zip(server.root / "ml-100k.zip", ml100k_members())
    url, dest = server.url("ml-100k.zip"), tmp_path / "data"
    with pytest.raises(DataError) as info:
        download("ml-100k", dest, url=url, sha256="0" * 64, progress=False)
    message = str(info.value)
    assert url in message and "0" * 64 in message and sha in message
    assert list(dest.iterdir()) == []  # no temp file, no half-made folder


def test_registered_sha256_is_checked(server: Server, tmp_path: Path) -> None:
    make_zip(server.root / "ml-100k.zip", ml100k_members())
    with pytest.raises(DataError, match=DATASETS.get("ml-100k").sha256):
        download("ml-100k", tmp_path, url=server.url("ml-100k.zip"), progress=False)


def test_path_traversal_is_refused(server: Server, tmp_path: Path) -> None:
    members = ml100k_members() | {"ml-100k/../../evil.txt": b"x"}
    sha = make_zip(server.root / "evil.zip", members)
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="unsafe path"):
        download("ml-100k", dest, url=server.url("evil.zip"), sha256=sha, progress=False)
    assert not (tmp_path / "evil.txt").exists() and list(dest.iterdir()) == []


def test_archive_without_dataset_files(server: Server, tmp_path: Path) -> None:
    sha = make_zip(server.root / "other.zip", {"ml-100k/README": b"only a readme"})
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="lacks ml-100k/u.data"):
        download("ml-100k", dest, url=server.url("other.zip"), sha256=sha, progress=False)
    assert list(dest.iterdir()) == []


def test_http_error_and_incomplete_folder(server: Server, tmp_path: Path) -> None:
    url, dest = server.url("missing.zip"), tmp_path / "data"
    with pytest.raises(DataError, match="download failed") as info:
        download("ml-100k", dest, url=url, progress=False)
    assert url in str(info.value) and "404" in str(info.value) and list(dest.iterdir()) == []
    (dest / "ml-100k").mkdir()
    with pytest.raises(DataError, match="lacks u.data"):
        download("ml-100k", dest, url=url, progress=False)


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot write here") as info:
        download("ml-100k", blocker / "data", url="http://127.0.0.1:9/never.zip", progress=False)
    assert "--data-dir" in str(info.value)
