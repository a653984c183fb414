"""Gutenberg clean-up on the header, footer and encoding layouts of the different eras of the catalogue.

In-memory, no network. The headers are shortened from the real layouts (1990s "small print" etexts,
2000s "*** START OF THIS", 2023+ "*** START OF THE"). Run: pytest tests/book/test_gutenberg_layouts.py -q
"""

from __future__ import annotations

import json

import pytest

from dantes_mlx.book.clean import clean_file, clean_text
from dantes_mlx.config import CleanConfig
from dantes_mlx.errors import InputError

BODY = ("CHAPITRE PREMIER\n\n"
        "Il était une fois un roi qui avait trois filles, et la plus jeune était\n"
        "si belle que le soleil s'étonnait chaque fois qu'il la voyait.\n\n"
        "--Bonjour, mon père, dit-elle.\n")
CLEAN = ("CHAPITRE PREMIER\n\nIl était une fois un roi qui avait trois filles, et la plus jeune était si belle "
         "que le soleil s'étonnait chaque fois qu'il la voyait.\n\n--Bonjour, mon père, dit-elle.\n")

SMALL_PRINT_HEADER = """The Project Gutenberg Etext of Le Petit Conte, by Quelqu'un

Please take a look at the important information in this header.

**Welcome To The World of Free Plain Vanilla Electronic Texts**

Title: Le Petit Conte

Author: Quelqu'un

Release Date: May, 2001  [Etext #2650]

*****These eBooks Were Prepared By Thousands of Volunteers!*****

***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***
Why is this "Small Print!" statement here?  You know: lawyers.
They tell us you might sue us if there is something wrong with
your copy of this etext, even if you got it for free.

*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.02/11/02*END*




This etext was prepared by John Doe <jdoe@example.org>.




"""
SMALL_PRINT_FOOTER = """

End of the Project Gutenberg Etext of Le Petit Conte, by Quelqu'un
"""


def test_small_print_header_of_the_first_etexts_is_removed():
    result = clean_text(SMALL_PRINT_HEADER + BODY + SMALL_PRINT_FOOTER)
    assert result.text == CLEAN
    assert result.warnings == []
    assert result.meta["title"] == "Le Petit Conte"
    assert result.meta["credits"] == ["This etext was prepared by John Doe <jdoe@example.org>."]


def test_small_print_in_a_footer_is_not_taken_for_the_header():
    header = ("The Project Gutenberg EBook of Le Petit Conte\n\nTitle: Le Petit Conte\n\n"
              "*** START OF THE PROJECT GUTENBERG EBOOK LE PETIT CONTE ***\n\n")
    footer = ("\n*** END OF THE PROJECT GUTENBERG EBOOK LE PETIT CONTE ***\n\n"
              "***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN EBOOKS**START***\nlegal text\n"
              "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN EBOOKS*Ver.02/11/02*END*\n")
    assert clean_text(header + BODY + footer).text == CLEAN
    # A file cut before its END marker keeps its book; only a header's small print moves the start.
    cut = clean_text(header + BODY * 3 + footer.split("***\n", 1)[1])
    assert cut.text.startswith("CHAPITRE PREMIER\n\nIl était une fois")


MODERN_HEADER = """The Project Gutenberg eBook of Le comte de Monte-Cristo, Tome I

This ebook is for the use of anyone anywhere in the United States and
most other parts of the world at no cost and with almost no restrictions
whatsoever.

Title: Le comte de Monte-Cristo, Tome I

Author: Alexandre Dumas

Release date: March 4, 2006 [eBook #17989]
                Most recently updated: October 30, 2024

Language: French

Credits: Produced by Chuck Greif and the Online Distributed Proofreading Team


*** START OF THE PROJECT GUTENBERG EBOOK LE COMTE DE MONTE-CRISTO, TOME I ***

"""
MODERN_FOOTER = """

*** END OF THE PROJECT GUTENBERG EBOOK LE COMTE DE MONTE-CRISTO, TOME I ***



Updated editions will replace the previous one--the old editions will
be renamed.
"""


def test_ebook_number_is_read_from_every_header_style():
    modern = clean_text(MODERN_HEADER + BODY + MODERN_FOOTER)
    assert modern.text == CLEAN
    assert modern.meta["ebook_id"] == "17989" and modern.meta["language"] == "French"
    assert clean_text(SMALL_PRINT_HEADER + BODY + SMALL_PRINT_FOOTER).meta["ebook_id"] == "2650"
    older = MODERN_HEADER.replace("[eBook #17989]", "[EBook #17989]").replace("THE PROJECT", "THIS PROJECT")
    assert clean_text(older + BODY + MODERN_FOOTER).meta["ebook_id"] == "17989"


CHAPTER_TEXT = ("Le 24 février 1815, la vigie de Notre-Dame de la Garde signala le\n"
                "trois-mâts le _Pharaon_, venant de Smyrne, Trieste et Naples.\n\n") * 6


def test_table_of_contents_at_the_end_adds_no_chapter():
    names = ["Marseille.--L'arrivée.", "Le père et le fils.", "Les Catalans."]
    chapters = "".join(f"{num}\n\n{name}\n\n{CHAPTER_TEXT}" for num, name in zip(("I", "II", "III"), names))
    toc = "TABLE DES MATIÈRES\n\n" + "".join(f"{num}. {name}\n\n" for num, name in zip(("I", "II", "III"), names))
    result = clean_text(MODERN_HEADER + chapters + toc + MODERN_FOOTER)
    assert [c["number"] for c in result.chapters] == ["I", "II", "III"]
    assert result.chapters[-1]["start"] < result.text.index("TABLE DES MATIÈRES")


def test_monte_cristo_chapters_are_named_by_the_line_after_the_number():
    # Monte-Cristo's layout: "I", then "Marseille.--L'arrivée.", "II", then "Le père et le fils."...
    names = ["Marseille.--L'arrivée.", "Le père et le fils.", "Les Catalans.", "Complot."]
    numbers = ("I", "II", "III", "IV")
    chapters = "".join(f"{num}\n\n{name}\n\n{CHAPTER_TEXT}" for num, name in zip(numbers, names))
    result = clean_text(MODERN_HEADER + chapters + MODERN_FOOTER)
    assert [c["title"] for c in result.chapters] == [f"{n}. {name}" for n, name in zip(numbers, names)]
    assert [c["name"] for c in result.chapters] == names
    # Without titles, the first sentence of a chapter is not taken for one, even when it is short.
    untitled = "".join(f"{num}\n\n{first}\n\n{CHAPTER_TEXT}"
                       for num, first in zip(numbers, ["Il pleuvait.", CHAPTER_TEXT.split("\n\n")[0]] * 2))
    assert [c["name"] for c in clean_text(MODERN_HEADER + untitled + MODERN_FOOTER).chapters] == [""] * 4


# -- encodings of the older files ------------------------------------------------------------------
def latin1_book(declared: str) -> str:
    header = MODERN_HEADER.replace("Language: French\n", f"Language: French\n\nCharacter set encoding: {declared}\n")
    return header + BODY + MODERN_FOOTER


def test_a_file_in_the_encoding_its_header_declares_is_read_without_options(tmp_path):
    (tmp_path / "17989-8.txt").write_bytes(latin1_book("ISO-8859-1").encode("latin-1"))
    result = clean_file(tmp_path / "17989-8.txt", tmp_path / "out.txt", CleanConfig())
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == CLEAN
    assert any("ISO-8859-1" in w for w in result.warnings)
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["encoding"] == "latin-1"
    # Windows' curly quotes and ellipsis in a file that says ISO-8859-1: what it really is, cp1252.
    windows = latin1_book("ISO-8859-1").replace("dit-elle.", "dit-elle\u2019\u2026").encode("cp1252")
    (tmp_path / "win.txt").write_bytes(windows)
    clean_file(tmp_path / "win.txt", tmp_path / "win.out.txt", CleanConfig())
    assert (tmp_path / "win.out.txt").read_text(encoding="utf-8") == CLEAN.replace("dit-elle.", "dit-elle\u2019\u2026")


def test_forcing_latin1_on_a_utf8_file_is_refused_not_garbled(tmp_path):
    (tmp_path / "utf8.txt").write_text(MODERN_HEADER + BODY + MODERN_FOOTER, encoding="utf-8")
    with pytest.raises(InputError) as err:  # "était" would become "Ã©tait" in every paragraph
        clean_file(tmp_path / "utf8.txt", tmp_path / "out.txt", CleanConfig(encoding="latin-1"))
    assert "valid UTF-8" in str(err.value) and "--encoding" in err.value.fix
    assert not (tmp_path / "out.txt").exists()


def test_a_mostly_utf8_file_is_not_sent_to_a_single_byte_encoding(tmp_path):
    data = (MODERN_HEADER + BODY + MODERN_FOOTER).encode("utf-8").replace(b"mon p", b"mon \xe9p")
    (tmp_path / "mixed.txt").write_bytes(data)
    with pytest.raises(InputError) as err:
        clean_file(tmp_path / "mixed.txt", tmp_path / "out.txt", CleanConfig())
    assert "mostly UTF-8" in str(err.value) and "--encoding" not in err.value.fix
    # Even when its header still says ISO-8859-1: the UTF-8 letters must not be read as Latin-1.
    (tmp_path / "said.txt").write_bytes(data.replace(b"Language: French\n", b"Character set encoding: ISO-8859-1\n"))
    with pytest.raises(InputError, match="mostly UTF-8"):
        clean_file(tmp_path / "said.txt", tmp_path / "out.txt", CleanConfig())


def test_illustration_tags_are_removed_and_chapter_lines_still_match():
    body = ("[Illustration]\n\nI\n\nMarseille.--L'arrivée.\n\n[Illustration: Le _Pharaon_ entrant dans le\n"
            "port de Marseille.]\n\n" + CHAPTER_TEXT + "[ILLUSTRATION. Dantès]\n\n"
            "Une note [Illustration] dans une phrase reste.\n\n[1] Une note.\n")
    result = clean_text(MODERN_HEADER + body + MODERN_FOOTER)
    assert "Illustration]" not in result.text.replace("note [Illustration] dans", "")
    assert "ILLUSTRATION" not in result.text and "[1] Une note." in result.text
    assert result.text.startswith("I\n\nMarseille.--L'arrivée.\n\nLe 24 février 1815")
    assert result.meta["illustrations_removed"] == 3
    assert [c["line"] for c in result.chapters] == [1]
    raw_lines = (MODERN_HEADER + body).split("\n")
    assert raw_lines[result.chapters[0]["source_line"] - 1] == "I"
