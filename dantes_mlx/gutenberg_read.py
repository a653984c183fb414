"""Reading a book file: encoding (UTF-8, or the 8-bit one its header declares), binary and size checks."""

from __future__ import annotations

import codecs
import hashlib
import re
from pathlib import Path

from dantes_mlx.errors import ConfigError, InputError

BINARY_MAGIC = {b"PK\x03\x04": "a ZIP archive (an EPUB or a zipped text?)", b"\x1f\x8b": "a gzip archive",
                b"%PDF": "a PDF document", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image"}
CONTROL_BYTES = bytes(range(0, 9)) + bytes(range(14, 32)) + b"\x7f"


def normalize_newlines(text: str) -> str:
    """Drop a byte-order mark; turn CRLF (and CR CR LF, a CRLF file converted twice) and lone CR line ends
    into LF: CR CR LF read as two line ends would make a blank line, a paragraph break, of every line end."""
    return re.sub(r"\r+\n", "\n", text.lstrip("\ufeff")).replace("\r", "\n")


def read_book(path: str | Path, encoding: str = "", max_line_chars: int = 1_000_000) -> tuple[str, dict]:
    """The text of a book file and how it was read; bad files raise InputError naming the fix."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path,
                         fix="check the path, or download a book with `dantes-mlx fetch ID`")
    if path.is_dir():
        raise InputError("is a directory, not a text file", path=path,
                         fix=f"pass the .txt files inside it (e.g. {path}/*.txt), or run `dantes-mlx clean` "
                             "without arguments to clean every book in data/raw/")
    data = path.read_bytes()
    if not data:
        raise InputError("file is empty", path=path,
                         fix="download it again (`dantes-mlx fetch ID --force`) or check the path")
    _check_binary(path, data, encoding)
    text, used = _decode(path, data, encoding)
    text = normalize_newlines(text)
    if not text.strip():
        raise InputError("file holds only whitespace", path=path, fix="check that this is the book's text")
    lengths = list(map(len, text.split("\n")))
    longest = max(lengths)
    if longest > max_line_chars:
        line = lengths.index(longest) + 1
        raise InputError(f"this line is {longest:,} characters long (limit {max_line_chars:,}): this is not "
                         "line-structured text (a book has at least one line break per paragraph)",
                         path=path, line=line,
                         fix="split the text into paragraphs, one per line; if such long paragraphs are "
                             "real, raise the limit with --max-line-chars (clean.max_line_chars)")
    info = {"encoding": used, "bom": data.startswith(codecs.BOM_UTF8),
            "line_endings": "crlf" if b"\r\n" in data[:1 << 16] else ("cr" if b"\n" not in data else "lf"),
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return text, info


def _check_binary(path: Path, data: bytes, encoding: str) -> None:
    wide = encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32"))
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not wide:
        raise InputError("this is UTF-16 text (it starts with a UTF-16 byte-order mark)", path=path,
                         fix="re-run with `--encoding utf-16`")
    kind = next((name for magic, name in BINARY_MAGIC.items() if data.startswith(magic)), None)
    sample = data[:1 << 20]
    controls = len(sample) - len(sample.translate(None, CONTROL_BYTES))
    if kind or (not wide and (b"\0" in data or controls > 0.01 * len(sample))):
        raise InputError(f"binary file ({kind or 'control bytes, not text'}), not a plain-text ebook", path=path,
                         fix="use the ebook's 'Plain Text UTF-8' file: `dantes-mlx fetch ID` downloads it"
                             + ("; unzip the archive first" if kind and "archive" in kind else ""))


def _decode(path: Path, data: bytes, encoding: str) -> tuple[str, str]:
    if encoding:
        return _decode_as(path, data, encoding), encoding
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        declared = "" if _mostly_utf8(data) else _declared_codec(data)
        if declared:  # an older ebook in the 8-bit encoding its header names
            return data.decode(declared), declared
        line = data.count(b"\n", 0, exc.start) + 1
        mixed = _mostly_utf8(data)
        fix = ("replace the broken bytes at that line (an editor that re-saves the file as UTF-8 shows them) or "
               "download the book again (`dantes-mlx fetch ID --force`); a single-byte encoding would garble "
               "every UTF-8 letter" if mixed else f"re-run with `--encoding {_suggested_codec(data)}` "
               "(or set `encoding` under `clean:` in dantes.yaml)")
        raise InputError(f"not UTF-8: byte 0x{data[exc.start]:02X} cannot be decoded; {_guess_encoding(data)}",
                         path=path, line=line, fix=fix) from None


def _decode_as(path: Path, data: bytes, encoding: str) -> str:
    """Decode with an encoding the user chose; refuse a single-byte one for a file that is UTF-8."""
    try:
        single_byte = len("é".encode(encoding)) == 1
    except LookupError:
        raise ConfigError(f"unknown encoding '{encoding}'", fix="use e.g. utf-8, latin-1 or cp1252") from None
    except UnicodeEncodeError:
        single_byte = False
    if single_byte and not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            raise InputError(f"this file is valid UTF-8: read as {encoding}, every accented letter would be "
                             "garbled ('é' -> 'Ã©')", path=path,
                             fix=f"drop --encoding {encoding} (and `encoding` under `clean:` in dantes.yaml) for "
                                 "this file; clean files of other encodings one at a time with -o OUTPUT")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not valid {encoding}: byte 0x{data[exc.start]:02X} cannot be decoded",
                         path=path, line=line, fix="try another --encoding (utf-8, latin-1, cp1252)") from None


def _declared_codec(data: bytes) -> str:
    """The 8-bit codec a Gutenberg header declares ("Character set encoding: ISO-8859-1"), or ""."""
    declared = re.search(rb"Character set encoding:[ \t]*([^\r\n]+)", data[:20000])
    name = declared.group(1).decode("ascii", "replace").lower().replace("_", "-") if declared else ""
    if "8859-15" in name:
        return "iso8859-15"
    if "1252" in name or "8859-1" in name or "latin-1" in name or "latin1" in name:
        try:  # files said to be ISO-8859-1 often hold Windows quotes and dashes (0x80-0x9F)
            data.decode("cp1252")
            return _suggested_codec(data)
        except UnicodeDecodeError:
            return "latin-1"
    return ""


def _mostly_utf8(data: bytes) -> bool:
    high = len(data) - len(data.translate(None, bytes(range(128, 256))))
    return sum(len(m) for m in re.findall(rb"[\xc2-\xf4][\x80-\xbf]{1,3}", data)) > high / 2


def _suggested_codec(data: bytes) -> str:
    # Bytes 0x80-0x9F are control codes in Latin-1 but curly quotes and dashes in Windows-1252.
    return "cp1252" if re.search(rb"[\x80-\x9f]", data) else "latin-1"


def _guess_encoding(data: bytes) -> str:
    if _mostly_utf8(data):
        return "the file is mostly UTF-8 with some broken bytes (mixed encodings?)"
    declared = re.search(rb"Character set encoding:\s*([\w-]+)", data[:20000])
    said = f" (its header says {declared.group(1).decode('ascii')})" if declared else ""
    name = "Windows-1252 (cp1252)" if _suggested_codec(data) == "cp1252" else "Latin-1 (ISO-8859-1)"
    return f"it looks like {name}{said}"
