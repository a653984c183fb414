"""A base model or tokenizer by name: a local folder, else the Hugging Face cache, else a download (no remote code)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dantes_mlx.errors import ModelError

# What a training run needs from a model repo: configs, weights, tokenizer (no custom code: we never
# trust remote code, and no .bin/.pth duplicates).
MODEL_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "tiktoken.model",
                  "*.txt", "*.jsonl", "*.jinja"]


def resolve_model(base: str, allow_patterns: list[str] | None = None) -> Path:
    """A local model folder: `base` itself when it is a folder, else a Hugging Face download."""
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError("not a model folder (no config.json)", path=path,
                             fix="point train.base_model at a Hugging Face model folder or repo id")
        return path
    if path.exists() or base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise ModelError(f"model folder not found and '{base}' is not a Hugging Face repo id",
                         path=base, fix="use a local folder or an id like mlx-community/Mistral-7B-Instruct-v0.3-4bit")
    return Path(_download(base, allow_patterns or MODEL_PATTERNS))


def _download(repo_id: str, allow_patterns: list[str]) -> str:
    """snapshot_download with errors that say what to do (licence click-through, login, offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    url = f"https://huggingface.co/{repo_id}"
    gated_fix = (f"open {url} while logged in, accept the licence (click-through), then run "
                 "`hf auth login` (or set HF_TOKEN) on this machine and retry")
    try:
        print(f"Downloading {repo_id} from Hugging Face (cached after the first time)...", file=sys.stderr)
        return snapshot_download(repo_id, allow_patterns=allow_patterns)
    except GatedRepoError as exc:
        raise ModelError(f"'{repo_id}' is a gated repo: access refused until its licence is accepted",
                         path=url, fix=gated_fix) from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(f"repo '{repo_id}' not found (or private)", path=url,
                         fix="check the id; for a private repo run `hf auth login`") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelError(f"cannot download '{repo_id}': no connection and it is not in the local cache",
                         path=url, fix="connect once to download it, or set train.base_model to a local folder") from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelError(f"Hugging Face refused '{repo_id}' (HTTP {status})", path=url, fix=gated_fix) from exc
        raise ModelError(f"download of '{repo_id}' failed: {exc}", path=url, fix="retry; check your connection") from exc


def local_model(name: str) -> Path | None:
    """The folder of a model already on this machine (a folder, or the Hugging Face cache), else None."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=MODEL_PATTERNS, local_files_only=True))
    except Exception:  # not downloaded here (another machine's run), or not a repo id
        return None


def load_tokenizer(name: str | None):
    """(tokenizer, note): a local folder or HF id via AutoTokenizer (no remote code); None and why if unavailable."""
    if not name or name.lower() == "none":
        return None, "skipped: no tokenizer given (--tokenizer PATH_OR_HF_ID or train.base_model)"
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None, "skipped: transformers is not installed (pip install transformers)"
    local = Path(name).expanduser()
    try:
        if local.is_dir():
            return AutoTokenizer.from_pretrained(str(local), trust_remote_code=False), f"tokenizer {local}"
        try:  # the cache first: no network call at all when the tokenizer is there
            return AutoTokenizer.from_pretrained(name, trust_remote_code=False, local_files_only=True), \
                f"tokenizer {name}"
        except OSError:
            require_hub(name)
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False), f"tokenizer {name}"
    except ModelError:
        raise
    except Exception as exc:  # any download/parse failure only disables the token checks
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"skipped: could not load tokenizer {name} ({reason})"


def require_hub(repo_id: str, timeout: float = 5.0) -> None:
    """Fail fast when a repo missing from the HF cache cannot be downloaded (huggingface_hub retries ~45 s)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why, hint = "HF_HUB_OFFLINE is set", ""
    if not offline:
        try:  # one HEAD, no retry, no token sent: can the Hub (or its proxy) be reached at all?
            get_session().head(constants.ENDPOINT, timeout=timeout)
            return
        except Exception as exc:  # DNS, refused, timeout, proxy: all mean offline here
            why = f"{constants.ENDPOINT} cannot be reached ({type(exc).__name__})"
            hint = "; offline, set HF_HUB_OFFLINE=1 to skip this check"
    raise ModelError(f"tokenizer '{repo_id}' is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                     f"and {why}", path=f"https://huggingface.co/{repo_id}",
                     fix=f"run once online, or `hf download {repo_id}` (huggingface-cli download), or set "
                         f"--tokenizer (prepare.tokenizer) to a local folder, or to none to skip the token "
                         f"checks{hint}")
