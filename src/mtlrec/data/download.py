"""Download a registered dataset's zip, check its checksum and unpack it atomically into the data dir."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm.auto import tqdm

from mtlrec.data.sources import DatasetSpec, data_root, get_spec
from mtlrec.errors import DataError

_CHUNK = 1 << 20


def download(
    name: str | DatasetSpec,
    dest_dir: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch dataset ``name`` into ``<root>/<folder>`` (root as in ``data_root``) and return that folder.

    Nothing is fetched when the folder already holds the dataset's files. ``url``/``sha256`` override the
    registered ones (a mirror, or a re-released zip). The zip is streamed to a temporary file next to the target,
    its sha256 checked, and the dataset folder unpacked into a temporary folder that is then renamed into place,
    so an interrupted run never leaves a half-written dataset behind.
    """
    spec = name if isinstance(name, DatasetSpec) else get_spec(name)
    root = data_root(dest_dir)
    target = root / spec.folder
    missing = _missing_files(target, spec)
    if not missing:
        return target
    if target.exists():
        raise DataError(
            f"folder exists but lacks {', '.join(missing)}",
            path=target,
            hint="delete the folder (or move it away) and download again",
        )
    url = url or spec.url
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.folder}-", suffix=".zip.part", dir=root)
    except OSError as e:
        raise DataError(
            f"cannot write here ({e.strerror})", path=root, hint="pass --data-dir with a writable folder"
        ) from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got_sha256, got_md5 = _fetch(url, out, label=spec.name, progress=progress)
        expected = (sha256 or spec.sha256 or "").lower()
        if expected and got_sha256 != expected:
            raise DataError(
                f"sha256 mismatch for {url}: expected {expected}, got {got_sha256}",
                path=url,
                hint="the download is damaged or the file changed upstream; retry, or pass the new one "
                "with --sha256 if you trust it",
            )
        if not expected and spec.md5 and got_md5 != spec.md5.lower():
            raise DataError(
                f"md5 mismatch for {url}: expected {spec.md5}, got {got_md5}",
                path=url,
                hint="the download is damaged or the file changed upstream; retry",
            )
        _extract(tmp, spec, target, url)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _missing_files(folder: Path, spec: DatasetSpec) -> list[str]:
    return [f for f in spec.files if not (folder / f).is_file()]


def _fetch(url: str, out: BinaryIO, *, label: str, progress: bool) -> tuple[str, str]:
    """Stream ``url`` into ``out``; returns its (sha256, md5) hex digests."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "mtlrec"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        raise DataError(
            f"download failed: {e}",
            path=url,
            hint="check the network, or fetch the zip yourself and unzip it into the data dir",
        ) from e
    return sha.hexdigest(), md5.hexdigest()


def _extract(zip_path: Path, spec: DatasetSpec, target: Path, url: str) -> None:
    """Unpack the zip's ``archive_folder`` into a temporary folder, then rename it to ``target``."""
    work = Path(tempfile.mkdtemp(prefix=f".{spec.folder}-", dir=target.parent))
    staged = work / spec.folder
    prefix = spec.archive_folder.rstrip("/") + "/" if spec.archive_folder else ""  # "": files at the zip's top
    try:
        try:
            archive = zipfile.ZipFile(zip_path)
        except zipfile.BadZipFile as e:
            raise DataError("the download is not a zip archive", path=url, hint="check the URL") from e
        with archive:
            for member in archive.infolist():
                if not member.filename.startswith(prefix) or member.is_dir():
                    continue  # other top-level entries (e.g. __MACOSX/) are not part of the dataset
                dest = staged.joinpath(*_safe_parts(member.filename[len(prefix) :], member.filename, url))
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
        missing = _missing_files(staged, spec)
        if missing:
            raise DataError(
                f"the archive lacks {', '.join(prefix + f for f in missing)}",
                path=url,
                hint="check that the URL points at this dataset's zip",
            )
        try:
            os.rename(staged, target)  # atomic on one filesystem; fails if another run created target first
        except OSError:
            if _missing_files(target, spec):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _safe_parts(relative: str, original: str, url: str) -> tuple[str, ...]:
    """Path parts of an archive member, refusing anything that could land outside the target folder."""
    path = PurePosixPath(relative)
    parts = path.parts
    if (
        "\\" in relative
        or path.is_absolute()
        or not parts
        or any(p in ("..", ".", "") for p in parts)
        or ":" in parts[0]
    ):
        raise DataError(
            f"unsafe path in archive: {original!r}",
            path=url,
            hint="the zip tries to write outside its folder; do not use it",
        )
    return parts
