"""Project Gutenberg clean-up: pure str -> str functions, with file writing at the edges (reading: read.py)."""

from __future__ import annotations

import bisect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx.book.notes import move_notes
from dantes_mlx.book.read import normalize_newlines, read_book
from dantes_mlx.errors import InputError
from dantes_mlx.outputs import check_output
from dantes_mlx.store import write_text_atomic

# A reply starts with one of --, —, –, - or «; "-" also covers "--".
DIALOGUE_STARTS = ("-", "—", "–", "«")
REPLY_CHARS = "-—–«"

START_RE = re.compile(r"^[ \t]*\*{3}[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG", re.I | re.M)
END_RE = re.compile(r"^[ \t]*\*{3}[ \t]*END OF (?:THE |THIS )?PROJECT GUTENBERG", re.I | re.M)
END_LINE_RE = re.compile(r"^[ \t]*End of (?:the |this )?Project Gutenberg", re.I | re.M)
# Files of the 1990s-2000s end their licence header with "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*...".
SMALL_PRINT_END_RE = re.compile(r"^[ \t]*\*?END\*?[ \t]*THE SMALL PRINT", re.I | re.M)
CREDITS_RE = re.compile(r"^\s*(?:Produced by|Produced from|This (?:e-?text|e-?book|file) was (?:produced|prepared)"
                        r"|E-?text prepared by|Transcribed by|Digiti[sz]ed by)", re.I)
HEADER_FIELDS = {"title": r"^Title:\s*(.+)", "author": r"^Author:\s*(.+)", "language": r"^Language:\s*(.+)",
                 "declared_encoding": r"^Character set encoding:\s*(.+)",
                 "ebook_id": r"(?i)\[E-?(?:Book|text) #(\d+)\]"}
ROMAN = r"(?=[IVXLCDM])M{0,4}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
CHAPTER_WORD_RE = re.compile(r"^(?:CHAPITRE|CHAPTER|Chapitre|Chapter)\s+(?P<num>[^\s.:—–-]+)\.?"
                             r"(?:\s*(?:--|[.:—–-])?\s*(?P<name>\S.*))?$")
ROMAN_HEADING_RE = re.compile(rf"^(?P<num>{ROMAN})\.?(?:(?:\.|\s*(?:--|[:—–-]))\s*(?P<name>\S.*))?$")
NUMBER_WORDS = set("premier première unique un deux trois quatre cinq six sept huit neuf dix onze douze treize "
                   "quatorze quinze seize vingt one two three four five six seven eight nine ten eleven twelve "
                   "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())
ITALICS_RE = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
WORD_RE = re.compile(r"\w+(?:-\w+)*")
WORD_START_RE, WORD_END_RE = re.compile(r"[^\W\d_]+"), re.compile(r"[^\W\d_]+$")
ILLUSTRATION_RE = re.compile(r"\[Illustrations?(?:[:.][^\]]*)?\]", re.I)  # "[Illustration: caption]"
TOC_GAP_CHARS = 300  # a heading followed by another within this many characters is a table-of-contents entry


@dataclass
class CleanResult:
    """The clean text (one paragraph per line, blank line between) and what the cleaner learned."""
    text: str
    chapters: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)


# -- pure functions ----------------------------------------------------------------------------------
def header_fields(lines: list[str]) -> dict:
    """Title, author, language, declared encoding and ebook id found in a Gutenberg header."""
    out = {}
    for line in lines:
        for key, pattern in HEADER_FIELDS.items():
            match = key not in out and re.search(pattern, line)
            if match:
                out[key] = match.group(1).strip()
    return out


def _marker_line(pattern: re.Pattern, text: str, pos: int = 0, needle: str = "") -> int | None:
    """0-based index of the first line from char `pos` on that the pattern matches (at its start).

    With a needle the text is scanned by str.find, far faster than a MULTILINE regex over a whole book.
    """
    if not needle:
        match = pattern.search(text, pos)
        return text.count("\n", 0, match.start()) if match else None
    while (hit := text.find(needle, pos)) >= 0:
        line_start = text.rfind("\n", 0, hit) + 1
        if pattern.match(text, line_start):
            return text.count("\n", 0, line_start)
        pos = hit + len(needle)
    return None


def locate_body(text: str, lines: list[str]) -> tuple[int, int, dict, list[str]]:
    """[start, end) line range of the book between the licence header and footer, metadata and warnings."""
    start = _marker_line(START_RE, text, 0, "***")
    after = 0 if start is None else len("\n".join(lines[:start + 1]))
    end = _marker_line(END_RE, text, after, "***")
    if end is None:  # some files only have the "End of the Project Gutenberg EBook" line
        end = _marker_line(END_LINE_RE, text, after)
    small_print = _marker_line(SMALL_PRINT_END_RE, text, after, "SMALL PRINT")
    # In the header (before the end, or in the first half of a file without one), not in a footer.
    if small_print is not None and (small_print < end if end is not None else small_print < len(lines) // 2):
        start = small_print
    meta = header_fields(lines[:start]) if start is not None else {}
    meta.update(start_marker_line=None if start is None else start + 1,
                end_marker_line=None if end is None else end + 1)
    warnings = []
    if start is None and end is None:
        warnings.append("no Project Gutenberg START/END markers: cleaned as plain text")
    elif start is None:
        warnings.append("no Project Gutenberg START marker: kept everything before the END marker")
    elif end is None:
        warnings.append("no Project Gutenberg END marker: kept everything after the START marker")
    first, last = (0 if start is None else start + 1), (len(lines) if end is None else end)
    if start is not None:
        first, meta["credits"] = skip_credits(lines, first, last)
    while last > first and not lines[last - 1].strip():
        last -= 1
    last = _drop_end_line(lines, first, last)
    return first, last, meta, warnings


def skip_credits(lines: list[str], first: int, last: int) -> tuple[int, list[str]]:
    """Skip the "Produced by ..." paragraph(s) that open the body; return the new start and what was cut."""
    credits = []
    while True:
        i = first
        while i < last and not lines[i].strip():
            i += 1
        if i >= last or not CREDITS_RE.match(lines[i]):
            return first, credits
        j = i
        while j < last and lines[j].strip():
            j += 1
        credits.append(" ".join(line.strip() for line in lines[i:j]))
        first = j


def _drop_end_line(lines: list[str], first: int, last: int) -> int:
    """Cut a closing "End of the Project Gutenberg EBook of ..." paragraph."""
    i = last
    while i > first and lines[i - 1].strip():
        i -= 1
    return i if i < last and END_LINE_RE.match(lines[i]) else last


@dataclass
class Block:
    """A run of non-blank lines; the flags let the common case skip per-line work."""
    start: int  # 0-based index of its first line in the file
    lines: list  # right-stripped, tabs turned into spaces
    plain: bool = True  # no indented line and no line-end hyphen: the paragraph is " ".join(lines)
    replies: bool = False  # a line after the first may open a dialogue reply


def text_blocks(lines: list[str], first: int, last: int) -> list[Block]:
    """The runs of non-blank lines between `first` and `last`."""
    blocks, block = [], None
    for i in range(first, last):
        line = lines[i].rstrip()
        if not line:
            block = None
            continue
        if "\t" in line:
            line = line.replace("\t", " ")
        if block is None:
            block = Block(i, [line])
            blocks.append(block)
        else:
            block.lines.append(line)
            block.replies = block.replies or line[0] in REPLY_CHARS or line[0] == " "
        if line[0] == " " or line[-1] == "-":
            block.plain = False
    return blocks


def _first_token_len(line: str) -> int:
    line = line.lstrip()  # text_blocks already turned tabs into spaces
    end = line.find(" ")
    return len(line) if end < 0 else end


def wrap_width(blocks: list[Block]) -> int | None:
    """The column the text was hard-wrapped at, or None when lines are already whole paragraphs."""
    sample = blocks[::max(1, len(blocks) // 200)]  # an even sample is plenty
    lengths = sorted(len(line) for block in sample for line in block.lines[:-1])
    if not lengths:
        return None
    p99 = lengths[int(0.99 * (len(lengths) - 1))]
    width = lengths[bisect.bisect_right(lengths, p99 + 5) - 1]  # the longest line, ignoring rare outliers
    breaks = [(a, b) for block in sample for a, b in zip(block.lines, block.lines[1:])]
    # Greedy wrapping breaks a line only when the next word would not have fitted; and nobody hard-wraps
    # at more than ~100 columns, so long typical lines are whole paragraphs.
    wrapped = sum(len(a) + 1 + _first_token_len(b) > width for a, b in breaks)
    if wrapped < 0.5 * len(breaks) or lengths[len(lengths) // 2] > 100:
        return None
    return width


def is_reply(line: str) -> bool:
    """Does this (stripped) line open a dialogue reply (and is not a "-----" rule)?"""
    return line.startswith(DIALOGUE_STARTS) and line.strip("-—–* ") != ""


def split_replies(lines: list[str], width: int) -> list[list[str]]:
    """Cut wrapped lines before each reply whose marker would have fitted on the line above."""
    cuts = [i for i in range(1, len(lines)) if is_reply(lines[i].lstrip())
            and len(lines[i - 1]) + 1 + _first_token_len(lines[i]) <= width]
    bounds = [0, *cuts, len(lines)]
    return [lines[a:b] for a, b in zip(bounds, bounds[1:])]


def hyphen_candidates(blocks: list[Block]) -> set[tuple[str, str]]:
    """(word start, word end) pairs split by a hyphen at a line end, e.g. ("peut", "être")."""
    pairs = set()
    for block in blocks:
        if block.plain:
            continue
        for a, b in zip(block.lines, block.lines[1:]):
            if a.endswith("-") and not a.endswith("--") and a[-2:-1].isalpha():
                head, tail = WORD_END_RE.search(a[:-1]), WORD_START_RE.match(b.lstrip())
                if head and tail and tail.group()[0].islower():
                    pairs.add((head.group(), tail.group()))
    return pairs


def soft_hyphens(pairs: set[tuple[str, str]], text: str) -> set[tuple[str, str]]:
    """Pairs whose hyphen is typographic: the joined word occurs in the text and the hyphenated one does not.

    Gutenberg wrappers break lines only at spaces and at real hyphens, so "peut-\\nêtre" keeps its hyphen;
    only the text's own evidence ("singulière" elsewhere, never "singu-lière") removes one.
    """
    if len(pairs) <= 16:  # a few words: look each one up; many: build the book's vocabulary once
        def occurs(word):
            return _occurs(word, text) or (word != word.lower() and _occurs(word.lower(), text))
    else:
        vocab = set()
        for token in set(text.lower().split()):
            for word in (token,) if token.isalpha() else WORD_RE.findall(token):
                vocab.add(word)
                if "-" in word:
                    parts = word.split("-")
                    vocab.update(f"{x}-{y}" for x, y in zip(parts, parts[1:]))

        def occurs(word):
            return word.lower() in vocab
    return {(h, t) for h, t in pairs if occurs(h + t) and not occurs(f"{h}-{t}")}


def _occurs(word: str, text: str) -> bool:
    """Does `word` occur in `text` as a whole word (or a whole part of a hyphenated word)?"""
    start = text.find(word)
    while start >= 0:
        end = start + len(word)
        if not (start and text[start - 1].isalnum()) and not (end < len(text) and text[end].isalnum()):
            return True
        start = text.find(word, start + 1)
    return False


def join_lines(lines: list[str], soft: set[tuple[str, str]] = frozenset()) -> str:
    """One paragraph from its wrapped lines; a hyphen at a line end joins the word halves."""
    out = lines[0].strip()
    for line in lines[1:]:
        line = line.strip()
        stem = out.rstrip("-")
        if len(stem) == len(out) or (stem and stem[-1] == " "):
            out += " " + line  # no dash, or a free-standing one ("mot -", "mot --"): the wrap was at a space
        else:  # a dash glued to what precedes: the wrap was at the dash, so no space
            head = WORD_END_RE.search(out, max(0, len(out) - 80), len(out) - 1)
            tail = WORD_START_RE.match(line)
            soft_break = head and tail and len(stem) == len(out) - 1 and (head.group(), tail.group()) in soft
            out = (out[:-1] if soft_break else out) + line
    return out


def strip_italics(text: str) -> str:
    """Remove the _underscores_ Gutenberg puts around italics (leaves "C___" and "___" alone)."""
    return ITALICS_RE.sub(r"\1", text)


def parse_heading(paragraph: str) -> tuple[str, str] | None:
    """(number, name) when a paragraph is a chapter heading ("I", "CHAPITRE II", "XXXVII. Le ...")."""
    if len(paragraph) > 90 or not paragraph[:1].isupper():
        return None
    match = CHAPTER_WORD_RE.match(paragraph)
    if match:
        num = match.group("num")
        ok = (re.fullmatch(ROMAN, num) or num.isdigit() or num.lower() in NUMBER_WORDS
              or num.lower().endswith(("ième", "ieme")))
        return (num, match.group("name") or "") if ok else None
    match = ROMAN_HEADING_RE.match(paragraph)
    name = match and match.group("name") or ""
    # "M. Morrel", "L. Bonaparte": a lone C, D, L or M before a name is an initial, not a number.
    if match and len(name.split()) <= 14 and not (name and match.group("num") in ("C", "D", "L", "M")):
        return match.group("num"), name
    return None


def find_chapters(paragraphs: list[str], starts: list[int], source_lines: list[int]) -> list[dict]:
    """Chapter headings with their clean-text line (1-based), char offset and raw-file line (1-based)."""
    found = []
    for i, para in enumerate(paragraphs):
        if len(para) <= 90 and para[:1].isupper():
            heading = parse_heading(para)
            if heading:
                found.append((i, heading))

    def gap_after(k):  # characters between heading k and the next one (or the end of the text)
        i = found[k][0]
        next_start = starts[found[k + 1][0]] if k + 1 < len(found) else starts[-1] + len(paragraphs[-1]) + 2
        return next_start - starts[i] - len(paragraphs[i])

    # A table of contents: headings close together; the last entry of one that ends the book is close
    # to the one before it and to the end.
    kept = [(i, number, name) for k, (i, (number, name)) in enumerate(found) if gap_after(k) >= TOC_GAP_CHARS
            or (k + 1 == len(found) and not (k and gap_after(k - 1) < TOC_GAP_CHARS))]
    titled = _titles_follow_numbers(paragraphs, [i for i, _, name in kept if not name])
    chapters = []
    for i, number, name in kept:
        heading, title = paragraphs[i], paragraphs[i]
        if not name and i + 1 < len(paragraphs):
            following = paragraphs[i + 1]
            # An all-capitals line, Gutenberg's "Marseille.--L'arrivée." style, or any short line in a
            # book where one follows (nearly) every bare number ("II" then "Le père et le fils.").
            short = len(following) <= 80 and not is_reply(following)
            if short and (titled or "--" in following or not any(c.islower() for c in following)):
                name, title = following, f"{heading.rstrip('.')}. {following}"
        chapters.append({"index": len(chapters), "heading": heading, "number": number, "name": name,
                         "title": title, "start": starts[i], "line": 2 * i + 1, "source_line": source_lines[i]})
    return chapters


def text_chapters(text: str) -> list[dict]:
    """Chapters of any text as read (its non-blank lines taken as paragraphs, offsets into `text`), found
    by the rules `clean` uses: what `extract --input` records when the text has no sidecar."""
    paragraphs, starts, lines, pos = [], [], [], 0
    for number, line in enumerate(text.split("\n"), 1):
        content = line.strip()
        if content:
            paragraphs.append(content)
            starts.append(pos + len(line) - len(line.lstrip()))
            lines.append(number)
        pos += len(line) + 1
    return find_chapters(paragraphs, starts, lines) if paragraphs else []


def _titles_follow_numbers(paragraphs: list[str], bare: list[int]) -> bool:
    """Is (nearly) every bare chapter number followed by a short title line, as in Monte-Cristo?"""
    following = [paragraphs[i + 1] for i in bare if i + 1 < len(paragraphs)]
    titles = sum(len(p) <= 80 and p[:1].isupper() and not is_reply(p) and not parse_heading(p) for p in following)
    return len(following) >= 3 and titles >= 0.8 * len(following)


def book_stats(paragraphs: list[str], chapters: list[dict], text: str) -> dict:
    """Paragraphs, dialogue paragraphs, chapters, words and characters of a clean text."""
    return {"paragraphs": len(paragraphs), "dialogue_paragraphs": sum(map(is_reply, paragraphs)),
            "chapters": len(chapters), "words": len(text.split()), "chars": len(text)}


def clean_text(raw: str, keep_italics: bool = True) -> CleanResult:
    """Gutenberg plain text -> one paragraph per line, a blank line between, plus chapters and stats."""
    text = normalize_newlines(raw)
    lines = text.split("\n")
    first, last, meta, warnings = locate_body(text, lines)
    blocks = text_blocks(lines, first, last)
    width = wrap_width(blocks)
    soft = soft_hyphens(hyphen_candidates(blocks), text) if width else set()
    paragraphs, source_lines, illustrations = [], [], 0
    for block in blocks:
        if width is None or block.replies:
            groups = [[line] for line in block.lines] if width is None else split_replies(block.lines, width)
        else:
            groups = [block.lines]
        offset = block.start + 1
        for group in groups:
            para = " ".join(group) if block.plain else join_lines(group, soft)
            offset += len(group)
            if para[:1] == "[" and ILLUSTRATION_RE.fullmatch(para):  # a picture's place, not text
                illustrations += 1
                continue
            paragraphs.append(para)
            source_lines.append(offset - len(group))
    paragraphs, source_lines, notes = move_notes(paragraphs, source_lines)
    if not keep_italics:
        paragraphs = [strip_italics(p) if "_" in p else p for p in paragraphs]
    starts, pos = [], 0
    for para in paragraphs:
        starts.append(pos)
        pos += len(para) + 2
    text = "\n\n".join(paragraphs) + "\n" if paragraphs else ""
    chapters = find_chapters(paragraphs, starts, source_lines)
    meta.update(wrap_width=width, soft_hyphens_removed=len(soft), illustrations_removed=illustrations,
                notes_moved=len(notes), keep_italics=keep_italics, notes=notes)
    return CleanResult(text, chapters, book_stats(paragraphs, chapters, text), warnings, meta)


# -- cleaning files ----------------------------------------------------------------------------------
def sidecar_path(clean_path: str | Path) -> Path:
    """Where the metadata JSON of a clean text lives: `<stem>.json` next to it."""
    return Path(clean_path).with_suffix(".json")


def clean_file(src: str | Path, dst: str | Path, config) -> CleanResult:
    """Clean one book file into `dst` plus its sidecar JSON (chapters, source, encoding, stats); atomic."""
    src, dst = Path(src), Path(dst)
    raw, info = read_book(src, config.encoding, config.max_line_chars)
    result = clean_text(raw, keep_italics=config.keep_italics)
    if not config.encoding and info["encoding"] != "utf-8":
        result.warnings.append(f"not UTF-8: read as {info['encoding']} (its header declares "
                               f"{result.meta.get('declared_encoding', '?')})")
    if not result.text:
        raise InputError("no text left after removing the Project Gutenberg header and footer", path=src,
                         fix="check that the book's text lies between the *** START and *** END markers")
    sidecar = {"source": str(src), **info, **result.meta, "stats": result.stats,
               "warnings": result.warnings, "chapters": result.chapters}
    write_text_atomic(dst, result.text)
    write_text_atomic(sidecar_path(dst), json.dumps(sidecar, ensure_ascii=False, indent=1) + "\n")
    return result


def plan_outputs(inputs: list[Path], output: Path | None, clean_dir: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: `output` is a file for one input, a folder for several (default clean_dir)."""
    as_dir = output is None or len(inputs) > 1 or output.is_dir() or str(output).endswith(("/", os.sep))
    folder = clean_dir if output is None else output
    pairs = [(src, folder / src.with_suffix(".txt").name if as_dir else output) for src in inputs]
    seen = {}
    for src, dst in pairs:
        if dst.suffix == ".json":
            raise InputError("the output must not end in .json (that name is kept for the sidecar)", path=dst,
                             fix="name the output .txt")
        check_output(dst, inputs=inputs, writes=[dst.with_suffix(".json")], example=src.with_suffix(".txt").name)
        if dst in seen:
            raise InputError(f"{seen[dst]} and {src} would both be written to {dst}", path=dst,
                             fix="clean them one at a time with -o OUTPUT")
        seen[dst] = src
    return pairs


def clean_books(inputs, output, raw_dir: str | Path, clean_dir: str | Path, config) -> list[tuple]:
    """Clean the given files (default: every .txt in raw_dir); (input, output, CleanResult) for each."""
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raw_dir = Path(raw_dir)
        inputs = sorted(raw_dir.glob("*.txt")) if raw_dir.is_dir() else []
        if not inputs:
            raise InputError("no .txt books to clean", path=raw_dir,
                             fix="run `dantes-mlx fetch 17989` (or `dantes-mlx fetch --file PATH`) first, "
                                 "or name files: `dantes-mlx clean INPUT... -o OUTPUT`")
    plan = plan_outputs(inputs, Path(output) if output else None, Path(clean_dir))
    return [(src, dst, clean_file(src, dst, config)) for src, dst in plan]
