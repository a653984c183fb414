"""Clean speed on a 4-volume-sized Gutenberg book: dantes_mlx.book.clean vs a naive line-by-line cleaner.

No real 4-volume book can be downloaded here, so the book is synthesized in Gutenberg layout (BOM, CRLF,
licence header and footer, "Produced by", chapter headings, paragraphs hard-wrapped at 70 columns with
breaks at hyphens) from the paragraphs of ../shared/data/gutenberg/morte_amoureuse (or, without it, the
built-in demo scene), repeated to about 2.5 MB. Both cleaners run on the same string in the same process.

The peer is the obvious approach, written here as such a project would write it: read the lines, flip a
flag at the START/END markers, drop "Produced by" / "End of" lines, accumulate lines into a paragraph until a
blank line, glue a line-end hyphen, match chapter headings with a regex. It does not estimate the wrap
width, split replies that lack a blank line, weigh line-end hyphens against the text's vocabulary, or check
the input; its output on this book is compared with ours and reported.

Run: python bench/clean_speed.py [--mb 2.5] [--repeat 7]
Prints MB/s and seconds per MB for both, then a last line `ratio: X` where X = peer time / our time for
cleaning the same in-memory text (above 1: ours is faster). Goal: ours under 1 second per MB.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dantes_mlx.config import CleanConfig  # noqa: E402
from dantes_mlx.book.clean import clean_file, clean_text  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "gutenberg" / "morte_amoureuse.expected.txt"
DEMO = ROOT / "dantes_mlx" / "resources" / "demo_scene.txt"


def roman(n: int) -> str:
    out = ""
    for value, letters in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                           (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + letters, n - value
    return out


def source_paragraphs() -> tuple[list[str], str]:
    if SHARED.is_file():
        text = SHARED.read_text(encoding="utf-8")
        return [p for p in text.rstrip("\n").split("\n\n") if len(p) > 80], SHARED.name
    return [p for p in clean_text(DEMO.read_text(encoding="utf-8")).text.rstrip("\n").split("\n\n")
            if len(p) > 80], DEMO.name


def build_book(target_mb: float) -> tuple[str, list[str]]:
    """A Gutenberg-layout book of about target_mb MB and the paragraphs a perfect cleaner returns."""
    paragraphs, _ = source_paragraphs()
    expected, size, i, chapter = [], 0, 0, 0
    while size < target_mb * 1e6:
        chapter += 1
        chunk = [roman(chapter), f"CHAPITRE {chapter} DE LA DÉMONSTRATION"]
        for _ in range(25):
            chunk.append(paragraphs[i % len(paragraphs)])
            i += 1
        expected += chunk
        size += sum(len(p.encode("utf-8")) + 2 for p in chunk)
    body = "\n\n\n".join("\n\n".join(textwrap.fill(p, 70, break_long_words=False) for p in expected[k:k + 27])
                         for k in range(0, len(expected), 27))
    raw = ("\ufeffThe Project Gutenberg EBook of Bench, by Nobody\n\nTitle: Bench\n\nLanguage: French\n\n"
           "*** START OF THIS PROJECT GUTENBERG EBOOK BENCH ***\n\n\n\n\nProduced by a benchmark.\n\n\n\n\n"
           + body + "\n\n\n\nEnd of the Project Gutenberg EBook of Bench\n\n"
           "*** END OF THIS PROJECT GUTENBERG EBOOK BENCH ***\n\nLicence text.\n")
    return raw.replace("\n", "\r\n"), expected


# Compiled once, so the peer is not slowed down by re's cache lookups.
START_PEER_RE, END_PEER_RE = re.compile(r"^\*\*\* ?START OF"), re.compile(r"^\*\*\* ?END OF")
SKIP_PEER_RE, HYPHEN_PEER_RE = re.compile(r"^(Produced by|End of the Project Gutenberg)"), re.compile(r"\w-$")
CHAPTER_PEER_RE = re.compile(r"^(CHAPITRE\s+\S+|[IVXLCDM]+\.?)$")


def peer_clean(raw: str) -> tuple[str, list[int]]:
    """The obvious line-by-line regex cleaner; returns the text and chapter offsets."""
    lines = raw.replace("\ufeff", "").replace("\r\n", "\n").split("\n")
    paragraphs, current, previous, inside, skipping = [], "", "", False, False
    for line in lines:
        if START_PEER_RE.match(line):
            inside = True
            continue
        if END_PEER_RE.match(line):
            break
        if not inside:
            continue
        if SKIP_PEER_RE.match(line):
            skipping = True
        line = line.strip()
        if not line:
            if current and not skipping:
                paragraphs.append(current)
            current, skipping = "", False
        elif current and HYPHEN_PEER_RE.search(previous):
            current = current + line
        else:
            current = current + " " + line if current else line
        previous = line
    if current and not skipping:
        paragraphs.append(current)
    text = "\n\n".join(paragraphs) + "\n"
    chapters, offset = [], 0
    for para in paragraphs:
        if CHAPTER_PEER_RE.match(para):
            chapters.append(offset)
        offset += len(para) + 2
    return text, chapters


def timed(fn, arg) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def best_times(fns, arg, repeat: int) -> list[float]:
    """Best time of each function, runs interleaved so that a load spike hits both alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        best = [min(b, timed(fn, arg)) for b, fn in zip(best, fns)]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=2.5, help="Book size in MB (4 volumes of Monte-Cristo: ~2.5).")
    parser.add_argument("--repeat", type=int, default=7, help="Runs per cleaner; the best is kept.")
    args = parser.parse_args()

    raw, expected = build_book(args.mb)
    mb = len(raw.encode("utf-8")) / 1e6
    print(f"book: {mb:.2f} MB, {len(expected):,} paragraphs, built from {source_paragraphs()[1]}")

    ours = clean_text(raw)
    peer_text, peer_chapters = peer_clean(raw)
    want = "\n\n".join(expected) + "\n"
    print(f"ours: output exact: {ours.text == want}; chapters found: {len(ours.chapters)}")
    print(f"peer: output exact: {peer_text == want}; chapter-like headings found: {len(peer_chapters)}")

    t_peer, t_ours = best_times([peer_clean, clean_text], raw, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "book.txt"
        src.write_text(raw, encoding="utf-8", newline="")
        [t_file] = best_times([lambda p: clean_file(p, Path(tmp) / "clean.txt", CleanConfig())], src, args.repeat)
    for name, seconds in (("ours (clean_text, in memory)", t_ours), ("peer (naive, in memory)", t_peer),
                          ("ours (clean_file: read, check, clean, write text + sidecar)", t_file)):
        print(f"{name:60s} {seconds:7.3f} s  {mb / seconds:7.2f} MB/s  {seconds / mb:6.3f} s/MB")
    print(f"goal under 1 s/MB: {'met' if t_file / mb < 1 else 'NOT met'} ({t_file / mb:.3f} s/MB end to end)")
    print("X = naive peer's time / our clean_text time on the same in-memory book (above 1: ours is faster)")
    print(f"ratio: {t_peer / t_ours:.2f}")


if __name__ == "__main__":
    main()
