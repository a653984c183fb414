"""Gutenberg fetch + clean: exact match on a real book, round-trip property, bad inputs, chapters (no network).

Downloads go to a local http.server on 127.0.0.1 started by the tests. Run: pytest tests/book/test_gutenberg.py -q
"""

from __future__ import annotations

import json
import socket
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dantes_mlx.book.clean import clean_text, join_lines, parse_heading, strip_italics
from dantes_mlx.cli import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gutenberg"
RAW, EXPECTED = SHARED / "morte_amoureuse.raw.txt", SHARED / "morte_amoureuse.expected.txt"
needs_shared = pytest.mark.skipif(not RAW.is_file(), reason=f"shared data not found at {SHARED}")

HEADER = ("The Project Gutenberg EBook of Essai\n\nTitle: Essai\n\nLanguage: French\n\n"
          "*** START OF THIS PROJECT GUTENBERG EBOOK ESSAI ***\n\n\n\n\n"
          "Produced by the Online Distributed Proofreading Team at\nhttp://www.pgdp.net\n\n\n\n")
FOOTER = ("\n\n\n\nEnd of the Project Gutenberg EBook of Essai\n\n"
          "*** END OF THIS PROJECT GUTENBERG EBOOK ESSAI ***\n\n***** This file should be named 1.txt *****\n")


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def gutenberg_book(paragraphs: list[str], width: int = 70) -> str:
    """Paragraphs hard-wrapped the way Gutenberg files are, between a licence header and footer."""
    body = "\n\n".join(textwrap.fill(p, width, break_long_words=False) for p in paragraphs)
    return HEADER + body + FOOTER


# -- the real book -----------------------------------------------------------------------------------
@needs_shared
def test_morte_amoureuse_matches_expected_exactly(tmp_path):
    result = run("clean", RAW, "-o", tmp_path / "morte.txt")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "morte.txt").read_bytes() == EXPECTED.read_bytes()
    meta = json.loads((tmp_path / "morte.json").read_text(encoding="utf-8"))
    assert meta["encoding"] == "utf-8" and meta["bom"] and meta["line_endings"] == "crlf"
    assert meta["stats"]["paragraphs"] == 82 and meta["wrap_width"] == 70
    assert meta["credits"][0].startswith("Produced by the Online Distributed Proofreading Team")
    assert "paragraphs 82" in result.output


# -- round trip --------------------------------------------------------------------------------------
WORDS = ("le", "la", "mer", "Dantès", "Marseille", "capitaine", "navire", "répondit", "jeune", "homme", "qu'il",
         "l'île", "château", "prison", "était", "ô", "Mercédès", "abbé", "peut-être", "c'est-à-dire", "dit-il",
         "Monte-Cristo", "soixante-six", "arc-en-ciel", "_jamais_", "—", "«", "»", ";", ":", "!", "?", "-",
         "vingt-cinq", "aujourd'hui", "extraordinairement", "--")
REPLY_MARKS = ("--", "— ", "– ", "- ", "« ")
prose = st.lists(st.sampled_from(WORDS), min_size=1, max_size=90).map(" ".join)
reply = st.tuples(st.sampled_from(REPLY_MARKS), st.sampled_from(WORDS[:16]), prose).map(lambda t: "".join(t))
paragraph_sets = st.lists(st.one_of(prose, reply), min_size=1, max_size=25)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraphs=paragraph_sets, width=st.integers(60, 80), crlf=st.booleans(), bom=st.booleans())
def test_wrapped_paragraphs_come_back_exactly(paragraphs, width, crlf, bom):
    raw = gutenberg_book(paragraphs, width)
    raw = ("\ufeff" if bom else "") + (raw.replace("\n", "\r\n") if crlf else raw)
    result = clean_text(raw)
    assert result.text == "\n\n".join(paragraphs) + "\n"
    assert result.warnings == []
    assert result.stats["paragraphs"] == len(paragraphs)
    replies = [p for p in paragraphs if p.startswith(("-", "—", "–", "«")) and p.strip("-—–* ")]  # not "---"
    assert result.stats["dialogue_paragraphs"] == len(replies)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraphs=paragraph_sets, width=st.integers(60, 80))
def test_cr_cr_lf_line_ends_of_a_file_converted_twice_are_one_line_end(paragraphs, width):
    """CR CR LF read as two line ends would turn every line end into a paragraph break."""
    raw = gutenberg_book(paragraphs, width)
    assert clean_text(raw.replace("\n", "\r\r\n")).text == clean_text(raw).text == "\n\n".join(paragraphs) + "\n"


@settings(max_examples=30, deadline=None)
@given(paragraphs=paragraph_sets, width=st.integers(60, 80))
def test_cleaning_clean_text_changes_nothing(paragraphs, width):
    once = clean_text(gutenberg_book(paragraphs, width)).text
    again = clean_text(once)
    assert again.text == once
    assert again.warnings == ["no Project Gutenberg START/END markers: cleaned as plain text"]


# -- unwrapping details ------------------------------------------------------------------------------
FILLER = ("Le soleil se levait sur le port de Marseille lorsque le trois-mâts doubla l'île de Pomègue; "
          "sur le quai les curieux se pressaient, car chacun savait que le navire revenait de Smyrne.")


def test_replies_without_blank_lines_become_paragraphs():
    block = ("--Bonjour, dit-il.\n"
             "--Bonsoir, répondit-elle, et elle ajouta une phrase assez longue pour\n"
             "passer à la ligne suivante.\n"
             "« Vraiment ? » fit-il.\n"
             "— Oui.\n"
             "– Et vous ?\n"
             "- Moi aussi.")
    result = clean_text(gutenberg_book([FILLER] * 3).replace("\n\nEnd of", f"\n\n{block}\n\nEnd of"))
    assert result.text.split("\n\n")[3:] == [
        "--Bonjour, dit-il.",
        "--Bonsoir, répondit-elle, et elle ajouta une phrase assez longue pour passer à la ligne suivante.",
        "« Vraiment ? » fit-il.", "— Oui.", "– Et vous ?", "- Moi aussi.\n"]


def test_marker_wrapped_inside_a_paragraph_stays_joined():
    # Full lines: the « and — could not have fitted above, so these are wraps, not new replies.
    text = "x" * 66 + " mot\n« cite » et\n" + "y" * 69 + "\n— puis la fin."
    assert clean_text(text).text == "x" * 66 + " mot « cite » et " + "y" * 69 + " — puis la fin.\n"


def test_line_end_hyphens():
    assert join_lines(["il viendra peut-", "être demain"]) == "il viendra peut-être demain"
    assert join_lines(["le comte de Monte-", "Cristo"]) == "le comte de Monte-Cristo"
    assert join_lines(["un mot -", "isolé"]) == "un mot - isolé"
    assert join_lines(["un mot --", "isolé"]) == "un mot -- isolé"
    assert join_lines(["oui--", "non"]) == "oui--non"
    assert join_lines(["--", "Demain!"]) == "--Demain!"
    assert join_lines(["en 1815-", "1816"]) == "en 1815-1816"
    assert join_lines(["singu-", "lière"], {("singu", "lière")}) == "singulière"
    # The text's own words decide: "singulière" occurs whole elsewhere, "singu-lière" never does.
    book = gutenberg_book([FILLER, "Une histoire singulière et terrible."]) + "\n"
    book = book.replace("terrible.", "terrible.\n\nUne aventure singu-\nlière, et peut-\nêtre vraie.")
    assert "Une aventure singulière, et peut-être vraie." in clean_text(book).text


def test_italics_kept_or_stripped():
    raw = gutenberg_book(["Il lut _le Moniteur_ à la cure de C___ ; au village de ___, rien."])
    assert "_le Moniteur_" in clean_text(raw).text
    stripped = clean_text(raw, keep_italics=False).text
    assert stripped == "Il lut le Moniteur à la cure de C___ ; au village de ___, rien.\n"
    assert strip_italics("_a_ b_c _d e_") == "a b_c d e"


def test_unwrapped_text_keeps_one_paragraph_per_line():
    lines = [FILLER * 2, "--Oui.", FILLER * 3, "Court.", FILLER * 2]
    assert clean_text("\n".join(lines)).text == "\n\n".join(lines) + "\n"


# -- chapters ----------------------------------------------------------------------------------------
def test_chapter_headings_are_recorded_with_offsets():
    body = FILLER * 2  # a table of contents differs from chapters by the text between headings
    paragraphs = ["TABLE", "I", "II", "III", "CHAPITRE PREMIER", body, "CHAPITRE II", "LE DÉPART", body,
                  "III", "Marseille.--L'arrivée.", body,
                  "XXXVII. Le retour de l'abbé", body, "I am not a heading at all, just a sentence.", body,
                  "M. Morrel", body, "VIII", body]
    result = clean_text(gutenberg_book(paragraphs))
    lines = result.text.split("\n")
    got = [(c["number"], c["title"]) for c in result.chapters]
    assert got == [("PREMIER", "CHAPITRE PREMIER"), ("II", "CHAPITRE II. LE DÉPART"),
                   ("III", "III. Marseille.--L'arrivée."), ("XXXVII", "XXXVII. Le retour de l'abbé"), ("VIII", "VIII")]
    for chapter in result.chapters:
        assert lines[chapter["line"] - 1] == chapter["heading"]
        assert result.text[chapter["start"]:].startswith(chapter["heading"])
    assert result.stats["chapters"] == 5
    raw_lines = gutenberg_book(paragraphs).split("\n")
    assert raw_lines[result.chapters[-1]["source_line"] - 1] == "VIII"


@pytest.mark.parametrize("text, expected", [
    ("I", ("I", "")), ("XIV.", ("XIV", "")), ("CHAPITRE IV", ("IV", "")), ("Chapitre 12", ("12", "")),
    ("CHAPITRE DEUXIÈME", ("DEUXIÈME", "")), ("XII.--Le père et le fils", ("XII", "Le père et le fils")),
    ("L", ("L", "")), ("Marseille", None), ("M. Morrel entra.", None), ("IIII", None), ("CHAPITRE Dantès", None),
    ("I want more.", None)])
def test_parse_heading(text, expected):
    assert parse_heading(text) == expected


# -- bad input through the command line --------------------------------------------------------------
def check_error(result, *needles):
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


def test_missing_file(tmp_path):
    check_error(run("clean", tmp_path / "absent.txt"), "absent.txt", "file not found", "dantes-mlx fetch")


def test_directory(tmp_path):
    check_error(run("clean", tmp_path), str(tmp_path), "is a directory", "*.txt")


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    check_error(run("clean", tmp_path / "empty.txt"), "empty.txt", "is empty", "fetch")


def test_binary_file(tmp_path):
    (tmp_path / "book.txt").write_bytes(bytes(range(256)) * 40)
    check_error(run("clean", tmp_path / "book.txt"), "book.txt", "binary file", "Plain Text UTF-8")
    (tmp_path / "book.zip").write_bytes(b"PK\x03\x04" + b"\x14" * 300)
    check_error(run("clean", tmp_path / "book.zip"), "book.zip", "ZIP archive", "unzip")


def test_latin1_file_is_detected_then_read_with_encoding(tmp_path):
    text = gutenberg_book(["Le château d'If, où Dantès fut enfermé, était sombre et froid."])
    (tmp_path / "latin.txt").write_bytes(text.encode("latin-1"))
    check_error(run("clean", tmp_path / "latin.txt"), "latin.txt:", "Latin-1", "--encoding latin-1")
    ok = run("clean", tmp_path / "latin.txt", "--encoding", "latin-1", "-o", tmp_path / "out.txt")
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == \
        "Le château d'If, où Dantès fut enfermé, était sombre et froid.\n"
    assert json.loads((tmp_path / "out.json").read_text())["encoding"] == "latin-1"


def test_file_without_markers_is_cleaned_with_a_warning(tmp_path):
    (tmp_path / "plain.txt").write_text("Un texte\nsans marqueurs.\n\n--Vraiment?\n", encoding="utf-8")
    result = run("clean", tmp_path / "plain.txt", "-o", tmp_path / "out.txt")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "no Project Gutenberg START/END markers" in result.output
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "Un texte sans marqueurs.\n\n--Vraiment?\n"


def test_other_encodings_and_an_empty_body(tmp_path):
    (tmp_path / "win.txt").write_bytes("C\u2019est l\u2019été.".encode("cp1252"))
    check_error(run("clean", tmp_path / "win.txt"), "win.txt:1:", "Windows-1252", "--encoding cp1252")
    (tmp_path / "wide.txt").write_bytes("Bonjour.".encode("utf-16"))
    check_error(run("clean", tmp_path / "wide.txt"), "wide.txt", "UTF-16", "--encoding utf-16")
    assert run("clean", tmp_path / "wide.txt", "--encoding", "utf-16", "-o", tmp_path / "w.txt").exit_code == 0
    (tmp_path / "hollow.txt").write_text(HEADER + FOOTER, encoding="utf-8")
    check_error(run("clean", tmp_path / "hollow.txt"), "hollow.txt", "no text left", "START and *** END")


def test_fifty_megabyte_single_line_is_refused_quickly(tmp_path):
    (tmp_path / "huge.txt").write_bytes(b"mot " * (50 * 2**20 // 4))
    check_error(run("clean", tmp_path / "huge.txt"), "huge.txt:1:", "characters long", "--max-line-chars")


def test_clean_without_arguments_cleans_data_raw(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_error(run("clean"), "no .txt books", "dantes-mlx fetch")
    (tmp_path / "book.txt").write_text(gutenberg_book(["I", FILLER]), encoding="utf-8")
    assert run("fetch", "--file", tmp_path / "book.txt").exit_code == 0
    result = run("clean", "--strip-italics")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data/clean/book.txt").read_text(encoding="utf-8") == f"I\n\n{FILLER}\n"
    meta = json.loads((tmp_path / "data/clean/book.json").read_text(encoding="utf-8"))
    assert meta["chapters"][0]["start"] == 0 and meta["keep_italics"] is False


# -- fetch against a local server --------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    pages: dict = {}
    requests: list = []

    def do_GET(self):
        self.requests.append((self.path, self.headers.get("User-Agent", "")))
        body = self.pages.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"not found")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.pages, _Handler.requests = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def test_fetch_downloads_once_then_uses_the_cache(server, tmp_path):
    url, handler = server
    book = gutenberg_book([FILLER]).encode("utf-8")
    handler.pages["/cache/epub/99901/pg99901.txt"] = book
    first = run("fetch", "99901", "--base-url", url, "--raw-dir", tmp_path)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "99901.txt").read_bytes() == book and "downloaded" in first.output
    assert handler.requests[0][1].startswith("dantes-mlx/")
    second = run("fetch", "99901", "--base-url", url, "--raw-dir", tmp_path)
    assert "cached" in second.output and len(handler.requests) == 1
    assert not list(tmp_path.glob("*.part"))


def test_fetch_falls_back_to_the_files_address(server, tmp_path):
    url, handler = server
    handler.pages["/files/99902/99902-0.txt"] = b"Du texte.\n"
    result = run("fetch", "99902", "--base-url", url, "--raw-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "99902.txt").read_bytes() == b"Du texte.\n"


def test_fetch_unknown_book_and_html_page(server, tmp_path):
    url, handler = server
    check_error(run("fetch", "99903", "--base-url", url, "--raw-dir", tmp_path),
                f"{url}/cache/epub/99903/pg99903.txt (HTTP 404)", "gutenberg.org/ebooks/99903", "--file PATH")
    handler.pages["/cache/epub/99904/pg99904.txt"] = b"<!DOCTYPE html><html>blocked</html>"
    check_error(run("fetch", "99904", "--base-url", url, "--raw-dir", tmp_path), "an HTML page", "--file PATH")
    assert not (tmp_path / "99903.txt").exists() and not (tmp_path / "99904.txt").exists()


def test_fetch_offline_names_the_url_and_the_way_out(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run("fetch", "17989", "--base-url", f"http://127.0.0.1:{port}", "--raw-dir", tmp_path, "--timeout", 5)
    check_error(result, f"http://127.0.0.1:{port}/cache/epub/17989/pg17989.txt", "unreachable",
                "dantes-mlx fetch --file PATH")


def test_fetch_never_shows_the_urls_credentials(server, tmp_path):
    url, handler = server
    secret = url.replace("http://", "http://reader:hunter2@") + "/?token=s3cr3t"
    result = run("fetch", "99905", "--base-url", secret, "--raw-dir", tmp_path)
    check_error(result, "cannot download ebook 99905", "://***@127.0.0.1")
    assert "hunter2" not in result.output and "s3cr3t" not in result.output


def test_fetch_rejects_bad_ids_and_missing_files(tmp_path):
    check_error(run("fetch", "monte-cristo", "--raw-dir", tmp_path), "'monte-cristo'", "ebooks/17989")
    check_error(run("fetch", "--file", tmp_path / "nope.txt", "--raw-dir", tmp_path), "nope.txt", "--file")


def test_fetch_without_ids_takes_the_books_of_dantes_yaml(server, tmp_path, monkeypatch):
    url, handler = server
    handler.pages["/cache/epub/99905/pg99905.txt"] = b"Un livre.\n"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dantes.yaml").write_text(f"project:\n  books: [99905]\n  gutenberg_url: {url}\n", encoding="utf-8")
    result = run("fetch")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data/raw/99905.txt").read_bytes() == b"Un livre.\n"
