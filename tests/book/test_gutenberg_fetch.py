"""Gutenberg fetch against a raw local socket server: cut-off downloads, empty replies, fallback files.

In-memory, no network: the server listens on 127.0.0.1. Run: pytest tests/book/test_gutenberg_fetch.py -q
"""

from __future__ import annotations

import socket
import threading

import pytest

from dantes_mlx.book.clean import clean_file
from dantes_mlx.book.fetch import fetch_books
from dantes_mlx.config import CleanConfig
from dantes_mlx.errors import InputError

BOOK = "Le château d'If, où Dantès fut enfermé.\n".encode("utf-8") * 50


@pytest.fixture
def raw_server():
    """A server whose reply to each path is given as raw bytes (status line, headers, body)."""
    replies, seen = {}, []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                path = conn.recv(65536).split(b" ")[1].decode()
                seen.append(path)
                conn.sendall(replies.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", replies, seen
    srv.close()


def ok(body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode() + body


def test_a_download_cut_off_early_is_never_cached(raw_server, tmp_path):
    url, replies, _ = raw_server
    replies["/cache/epub/99911/pg99911.txt"] = ok(BOOK[:700], length=len(BOOK))  # the server closes at 700
    with pytest.raises(InputError) as err:
        fetch_books(["99911"], tmp_path, base_url=url, timeout=5)
    assert f"700 of {len(BOOK):,} bytes" in str(err.value) and "again" in err.value.fix
    assert not list(tmp_path.iterdir())  # neither the book nor a .part file
    replies["/cache/epub/99911/pg99911.txt"] = ok(BOOK)
    assert fetch_books(["99911"], tmp_path, base_url=url, timeout=5)[0].status == "downloaded"
    assert (tmp_path / "99911.txt").read_bytes() == BOOK


def test_an_empty_reply_is_refused(raw_server, tmp_path):
    url, replies, _ = raw_server
    replies["/cache/epub/99912/pg99912.txt"] = ok(b"")
    with pytest.raises(InputError, match="empty"):
        fetch_books(["99912"], tmp_path, base_url=url, timeout=5)
    assert not (tmp_path / "99912.txt").exists()


def test_older_ebooks_fall_back_to_their_latin1_then_plain_files(raw_server, tmp_path):
    url, replies, seen = raw_server
    latin1 = ("Title: Vieux\n\nCharacter set encoding: ISO-8859-1\n\n*** START OF THIS PROJECT GUTENBERG EBOOK ***\n\n"
              "Le château d'If.\n\n*** END OF THIS PROJECT GUTENBERG EBOOK ***\n").encode("latin-1")
    replies["/files/99913/99913-8.txt"] = ok(latin1)
    got = fetch_books(["99913"], tmp_path, base_url=url, timeout=5)[0]
    assert got.source == f"{url}/files/99913/99913-8.txt" and seen == [
        "/cache/epub/99913/pg99913.txt", "/files/99913/99913-0.txt", "/files/99913/99913-8.txt"]
    clean_file(got.path, tmp_path / "clean.txt", CleanConfig())
    assert (tmp_path / "clean.txt").read_text(encoding="utf-8") == "Le château d'If.\n"
    replies["/files/99914/99914.txt"] = ok(b"Plain ASCII text.\n")
    assert fetch_books(["99914"], tmp_path, base_url=url, timeout=5)[0].source.endswith("/files/99914/99914.txt")
    with pytest.raises(InputError) as err:
        fetch_books(["99915"], tmp_path, base_url=url, timeout=5)
    assert "99915-8.txt (HTTP 404)" in str(err.value) and "gutenberg.org/ebooks/99915" in err.value.fix
