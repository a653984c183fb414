"""Project Gutenberg fetch: download plain-text ebooks (or copy local files) into data/raw/, as a cache."""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dantes_mlx import __version__
from dantes_mlx.config import is_ebook_id
from dantes_mlx.errors import InputError
from dantes_mlx.llm.base import redact
from dantes_mlx.outputs import check_output

DEFAULT_BASE_URL = "https://www.gutenberg.org"
# The current UTF-8 file first, then the older "-0" (UTF-8) file that many ebooks still have, then the
# oldest ones: "-8" (ISO-8859-1, which `clean` reads from its header) and plain (often 7-bit ASCII).
URL_TEMPLATES = ("{base}/cache/epub/{id}/pg{id}.txt", "{base}/files/{id}/{id}-0.txt",
                 "{base}/files/{id}/{id}-8.txt", "{base}/files/{id}/{id}.txt")
USER_AGENT = f"dantes-mlx/{__version__} (plain-text ebook fetch; python urllib)"
MAX_DOWNLOAD_BYTES = 64 * 2**20
MANUAL_FIX = ("download the ebook's 'Plain Text UTF-8' file elsewhere and run "
              "`dantes-mlx fetch --file PATH`")
OFFLINE_FIX = "check the internet connection; offline, " + MANUAL_FIX


@dataclass
class Fetched:
    """One book in raw/: where it came from and whether it was downloaded, cached or copied."""
    book: str
    path: Path
    status: str
    source: str = ""


def fetch_books(ids, raw_dir: str | Path, *, files=(), base_url: str = DEFAULT_BASE_URL,
                timeout: float = 60.0, force: bool = False) -> list[Fetched]:
    """Download ebooks by id into raw_dir as `<id>.txt` (kept as a cache) and copy local files there."""
    raw_dir = check_output(raw_dir, kind="dir", flag="--raw-dir")
    for book_id in ids:
        if not is_ebook_id(book_id):
            raise InputError(f"'{book_id}' is not a Project Gutenberg ebook id",
                             fix="use the number in the ebook's address, e.g. 17989 for "
                                 "https://www.gutenberg.org/ebooks/17989, or --file PATH for a local file")
    results = [copy_book(path, raw_dir) for path in files]
    for book_id in map(str, ids):
        dest = raw_dir / f"{book_id}.txt"
        if dest.is_file() and dest.stat().st_size and not force:
            results.append(Fetched(book_id, dest, "cached"))
            continue
        url = download_book(book_id, dest, base_url, timeout)
        results.append(Fetched(book_id, dest, "downloaded", url))
    return results


def copy_book(path: str | Path, raw_dir: Path) -> Fetched:
    """Copy a local text file into raw_dir (atomically), keeping its name."""
    path = Path(path)
    if not path.is_file():
        raise InputError("is a directory" if path.is_dir() else "file not found", path=path,
                         fix="give the path of a plain-text book file to --file")
    data = path.read_bytes()
    if not data:
        raise InputError("file is empty", path=path, fix="give the path of a plain-text book file to --file")
    dest = raw_dir / path.with_suffix(".txt").name
    if dest.exists() and dest.resolve() == path.resolve():
        return Fetched(dest.stem, dest, "in place", str(path))
    _write_bytes_atomic(dest, data)
    return Fetched(dest.stem, dest, "copied", str(path))


def download_book(book_id: str, dest: Path, base_url: str, timeout: float) -> str:
    """Download one ebook's plain text to dest, trying each Gutenberg address in turn; returns the URL used."""
    tried = []
    for template in URL_TEMPLATES:
        address = template.format(base=base_url.rstrip("/"), id=book_id)
        url = redact(address)  # what is printed, saved and put in errors: never the URL's credentials
        request = urllib.request.Request(address, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read(MAX_DOWNLOAD_BYTES + 1)
                expected = response.headers.get("Content-Length", "")
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 404, 410):
                tried.append(f"{url} (HTTP {exc.code})")
                continue
            raise InputError(f"cannot download ebook {book_id}: {url} answered HTTP {exc.code} {exc.reason}",
                             fix="try again later, or " + MANUAL_FIX) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise InputError(f"cannot download ebook {book_id}: {url} is unreachable ({reason})",
                             fix=OFFLINE_FIX) from None
        # read(n) returns a short body without raising when the connection drops: compare with the header.
        if expected.isdigit() and len(data) < int(expected) <= MAX_DOWNLOAD_BYTES:
            raise InputError(f"the download of {url} was cut off after {len(data):,} of {int(expected):,} bytes; "
                             "nothing was saved", fix="run the same command again")
        if not data:
            raise InputError(f"{url} answered with an empty file; nothing was saved",
                             fix="try again later, or " + MANUAL_FIX)
        if len(data) > MAX_DOWNLOAD_BYTES or data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
            raise InputError(f"{url} did not return a plain-text ebook "
                             f"({'over 64 MB' if len(data) > MAX_DOWNLOAD_BYTES else 'an HTML page'})",
                             fix=MANUAL_FIX)
        _write_bytes_atomic(dest, data)
        return url
    raise InputError(f"ebook {book_id} has no plain-text file at " + " or ".join(tried),
                     fix=f"check the id at https://www.gutenberg.org/ebooks/{book_id}; "
                         "or download a text yourself and use `dantes-mlx fetch --file PATH`")


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
