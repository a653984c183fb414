"""Rule-based French direct speech: find quotations («», —, –, --) and attribute their speakers.

Offsets everywhere are Python str indices (Unicode code points) into the text as given. To get
offsets into a file, read it with `read_text` (UTF-8, newlines kept as they are in the file).
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from pathlib import Path

from dantes_mlx.dialogue_lexicon import DETS, INVERTED, PRESENT_FORMS, SPEECH_FORMS
from dantes_mlx.dialogue_speakers import (attribute, fold, is_character, is_verb_like, normalise_speaker,
                                          subject_after_verb, subject_verbs, tokens)
from dantes_mlx.errors import InputError

__all__ = ["Quote", "find_quotations", "character_quotes", "mentions_character", "all_speakers_rows",
           "normalise_speaker", "is_character", "paragraphs", "read_text"]


# --- incises: where the narrator interrupts a reply, and where the reply gives way to narration

_INCISE = re.compile(
    r"(?P<cl>(?:(?:lui|leur|me|m['’]|te|t['’]|nous|vous|se|s['’])\s*)*)"
    r"(?P<verb>[^\W\d_]+(?:-t)?-(?:il|elle|ils|elles|on|je)\b|[^\W\d_A-ZÀ-Ý]+)")


def match_incise(source: str, pos: int, limit: int) -> tuple[int, int] | None:
    """If an incise starts at pos (after the reply's comma, "!" or "?"), its (start, end):
    from the verb up to the punctuation that gives the floor back to the speaker."""
    m = _INCISE.match(source, pos, limit)
    if not m:
        return None
    verb = m.group("verb").replace("’", "'")
    inv = INVERTED.match(verb)
    if inv:
        if not (inv.group("verb").lower() in _INVERTED_OK or _after_ok(source, m.end(), limit)):
            return None
    elif verb.lower() not in SPEECH_FORMS:
        return None
    else:
        toks = tokens(source[m.end():min(limit, m.end() + 100)], m.end())
        found = subject_after_verb(toks, 0)
        if found is None:
            return None
        if verb.lower() in PRESENT_FORMS:  # "demande le journal" may be an imperative: want "demande Jean."
            nxt = found[1]
            if nxt < len(toks) and toks[nxt][0] not in ",;.!?…»:":
                return None
    return m.start(), _incise_end(source, m.end(), limit)


_INVERTED_OK = {f.split("-")[0] for f in SPEECH_FORMS} | {"fit", "fis", "reprit", "ajouta", "pensa",
                                                          "fait", "dit", "demanda", "continua"}


def _after_ok(source: str, pos: int, limit: int) -> bool:
    """An unknown verb with an inverted pronoun is an incise when punctuation or a manner phrase follows."""
    rest = source[pos:min(limit, pos + 12)]
    return bool(re.match(r"\s*(?:[,.;:!?…»]|$|en\s|avec\s|d['’]un|tout\s|à\s)", rest))


_CLITIC_RE = r"(?:(?:ne|n['’]|se|s['’]|lui|leur|me|m['’]|te|t['’]|le|la|les|l['’]|en|y)\s*)*"
# "en souriant", "et en se regardant", "tout en lui tendant la main"
_PARTICIPLE = (r"(?:et\s+|tout\s+|ne\s+|n['’])?(?:en\s+)?" + _CLITIC_RE + r"[^\W\d_]{3,}ant\b"
               r"(?<!pourtant)(?<!cependant)(?<!maintenant)(?<!avant)(?<!durant)(?<!autant)(?<!quant)")
_PAST = r"[^\W\d_]+(?:ait|aient|èrent|irent|urent|inrent|a|it|ut|int)\b"
# Narration resuming after an incise's comma: "dit-il, et allant...", "dit l'aveugle qui voulait..."
# a past participle and its complement describing the speaker: "dit la vieille, appuyée sur sa fille,"
_PAST_PARTICIPLE = (r"(?:tout\s+)?[^\W\d_]{2,}(?:é|ée|és|ées|i|ie|is|u|ue|us)\s+"
                    r"(?:sur|vers|par|contre|dans|sous|entre|avec|à|au|aux|de|d['’]|du|des)\s")
_CONTINUE = re.compile(r"\s*(?:" + _PARTICIPLE + "|" + _PAST_PARTICIPLE +
                       r"|(?:et\s+)?(?:qui|dont)\s+" + _CLITIC_RE + _PAST +
                       r"|(?:et\s+)?dont\s|non\s+sans\s|(?:quand|lorsqu['’]|lorsque|tandis\s+que|pendant\s+que|"
                       r"comme)\s*(?:il|elle|ils|elles|on)\s+" + _CLITIC_RE + _PAST + r")", re.I)
# Passé simple forms that cannot be presents; with the 3rd-person plural endings and -a (not -ra,
# the future), they mark the narrator's voice: dialogue in French novels uses the passé composé.
_PASSE_SIMPLE = r"""fit prit mit sourit répondit reprit rendit fut eut dut put parut mourut courut vint tint
revint devint sortit partit sentit entendit descendit attendit perdit suivit ouvrit assit conduisit
aperçut reçut crut lut""".split()
_NARRATIVE_VERB = re.compile(
    r"\b(?:[^\W\d_]{3,}(?:èrent|irent|urent|inrent)|(?:il|elle|on|qui)\s+" + _CLITIC_RE +
    r"(?:(?!va\b|[^\W\d_]*ra\b|voilà\b|cela\b)[^\W\d_]{2,}a|" + "|".join(_PASSE_SIMPLE) + r"))\b", re.I)
_PERSON = re.compile(r"\b(?:je|tu|vous|nous|mon|ma|mes|ton|ta|tes|votre|vos|notre|nos|moi|toi|me|te)\b|"
                     r"\b[jmt]['’]", re.I)
_SECOND_PERSON = re.compile(r"\b(?:tu|vous|ton|ta|tes|votre|vos|toi|te)\b|\bt['’]", re.I)
_IMPERFECT = re.compile(r"\b[^\W\d_]{2,}(?<![rf])(?:ait|aient)\b", re.I)


def looks_narrative(sentence: str, after_incise: bool = False) -> bool:
    """Whether a sentence inside a dash paragraph is the narrator's, not the speaker's: no 1st/2nd
    person, "?" or "!", and a 3rd-person passé simple ("il tomba", "ils dirent"); right after an
    incise ("..., répliqua Bouvard. Ceux de Pécuchet étaient...") an imperfect is enough."""
    if re.search(r"[?!]", sentence) or _PERSON.search(sentence):
        return False
    return after_incise and _IMPERFECT.search(sentence) is not None or simple_past(sentence)


def simple_past(sentence: str) -> bool:
    """Whether a sentence has a 3rd-person passé simple: "il tomba", "ils dirent", and after a
    named subject "Sarrasine, le nez dans son manteau, courut au rendez-vous"."""
    if _NARRATIVE_VERB.search(sentence):
        return True
    return any(not subject.pronoun and _SIMPLE_PAST.fullmatch(verb) is not None and not verb.endswith("ra")
               for subject, verb in subject_verbs(sentence, tokens(sentence)))


_SIMPLE_PAST = re.compile(r"[^\W\d_]{2,}(?:a|èrent|irent|urent)|" + "|".join(_PASSE_SIMPLE))


def _apposition(chunk: str, source: str, after: int) -> bool:
    """", le chanteur le plus célèbre de la troupe." after an incise's subject: a verbless noun
    phrase closing the sentence describes the speaker."""
    toks = tokens(chunk)
    return (after < len(source) and source[after] == "." and 0 < len(toks) <= 10
            and str.lower(toks[0][0]) in DETS
            and not any(is_verb_like(t) for t, _, _ in toks)
            and not re.search(r"\b[sn]['’]|\w(?:ent|ons|ez)\b", chunk))  # no present tense either


def _incise_end(source: str, pos: int, limit: int) -> int:
    """End of an incise: the first , ; . ! ? … or », unless narration goes on after the comma
    (a participle, a relative clause...): then up to the first chunk in the 1st/2nd person."""
    p, continued = pos, False
    while p < limit:
        c = source[p]
        if c in ",;":
            chunk = re.match(r"[^,;.!?…»:]*", source[p + 1:limit]).group()
            opener = _CONTINUE.match(chunk) or _apposition(chunk, source, p + 1 + len(chunk))
            stop = source[p + 1 + len(chunk):p + 2 + len(chunk)]
            if chunk.strip() and (opener and not _SECOND_PERSON.search(chunk)
                                  or continued and not _PERSON.search(chunk) and stop not in ("!", "?")):
                continued = True
                p += 1
                continue
            return p
        if c == "." and _ABBREVIATION.search(source, max(0, p - 5), p + 1):
            p += 1
            continue
        if c in ".!?…»:—–" or source.startswith("--", p):
            return p
        p += 1
    return limit


_ABBREVIATION = re.compile(r"(?<!\w)(?:[A-ZÀ-Ý]|MM|Mme|Mlle|Mgr|Dr|St|Ste)\.$")


# --- quotations

@dataclasses.dataclass(frozen=True)
class Quote:
    """One direct-speech quotation.

    text == source[start:end]: the quotation from its opening marker to its last spoken word (or
    closing »), incises inside it included. `segments` are the spoken spans only (incises cut out,
    markers kept, as fr-litbank annotates them); `incises` the narrator's spans inside or right
    after the quote. `speaker` is the surface string naming the speaker (a pronoun's antecedent
    when resolved), `mention` the words at the cue itself ("il", "le jeune homme"), `cue` how it
    was attributed: incise, before, previous (narrative paragraph before the reply), alternation.
    """
    text: str
    start: int
    end: int
    segments: tuple[tuple[int, int], ...]
    marker: str
    incises: tuple[tuple[int, int], ...] = ()
    speaker: str | None = None
    speaker_start: int | None = None
    speaker_end: int | None = None
    mention: str | None = None
    cue: str | None = None

    def speech(self, source: str) -> str:
        """The spoken words only: segments joined, dialogue markers stripped."""
        parts = [source[a:b] for a, b in self.segments]
        joined = " ".join(p.strip() for p in parts if p.strip())
        joined = re.sub(r"^(?:--|[—–―-])\s*|^[«“]\s*", "", joined)
        return re.sub(r"\s*[»”]$", "", joined).strip()


_DASH = re.compile(r"(?:--|[—–―]|-(?=\s))[^\S\n]*")
_INNER_DASH = re.compile(r"(?<=[.!?…])\s+(?:--|[—–―])\s+(?=\S)")
_COLON_DASH = re.compile(r":\s*(?P<dash>--|[—–―])\s*(?=\w)")  # "il reprit : — Non."
_GUILLEMET = re.compile(r"[«»“”]")
_SPACES = " \t\u00a0\u202f"
_BREAK = re.compile(r"(?:,|;|!|\?|…|\.\.\.)\s+")  # inside a paragraph a newline is a wrap


def read_text(path: str | Path) -> str:
    """A UTF-8 file as one str with its newlines untouched, so that offsets are file code points."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise InputError("file not found", path=path, fix="check the --input path") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 at byte {exc.start}", path=path,
                         fix="convert it, e.g. `iconv -f latin1 -t utf-8 IN > OUT`") from exc


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph, trimmed. Paragraphs are blocks separated by blank lines when
    the text has them (hard-wrapped or one paragraph per line), else single lines; a line opening
    with a dialogue dash always starts a new paragraph."""
    lines, pos = [], 0  # (start, end) of each line's text, without its edge whitespace
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped:
            lead = len(line) - len(line.lstrip())
            lines.append((pos + lead, pos + lead + len(stripped)))
        else:
            lines.append(None)
        pos += len(line) + 1
    n_text = sum(x is not None for x in lines)
    n_blank = len(lines) - n_text
    n_long = sum(x is not None and x[1] - x[0] > 90 for x in lines)
    hard_wrapped = n_long <= 0.02 * n_text  # Gutenberg's 70-column lines
    blank_layout = n_blank > 0 and (hard_wrapped or n_blank >= 0.3 * n_text)
    result: list[tuple[int, int]] = []
    open_block = False
    for line in lines:
        if line is None:
            open_block = False
        elif blank_layout and open_block and not _DASH.match(text, line[0]):
            result[-1] = (result[-1][0], line[1])
        else:
            result.append(line)
            open_block = True
    return result


def trim_span(text: str, a: int, b: int) -> tuple[int, int]:
    """The span [a, b) without leading and trailing whitespace."""
    while b > a and text[b - 1].isspace():
        b -= 1
    while a < b and text[a].isspace():
        a += 1
    return a, b


def split_incises(text: str, start: int, body: int, end: int):
    """Cut the narrator's incises out of a reply running from start (its marker) to end; body is
    where the words begin. Returns (segments, incises) as fr-litbank cuts them: "— Oui," | " dit-il, "."""
    segments, incises = [], []
    cur = pos = body
    while True:
        m = _BREAK.search(text, pos, end)
        if not m or m.end() >= end:
            break
        found = match_incise(text, m.end(), end)
        if not found:
            pos = m.end()
            continue
        seg_end = m.start() + (0 if text[m.start()] == ";" else len(m.group().rstrip()))
        resume = found[1]
        if resume < end and text[resume] in ",;:.!?…":
            resume += 1
            while resume < end and text[resume] in ".…!?":
                resume += 1
        segments.append((start if not segments else cur, seg_end))
        incises.append((seg_end, resume))
        cur = pos = resume
        while cur < end and text[cur].isspace():
            cur = pos = cur + 1
        if cur >= end:
            break
    if cur < end:
        segments.append((start if not segments else cur, end))
    segments = [trim_span(text, a, b) for a, b in segments]
    return [s for s in segments if re.search(r"\w", text[s[0]:s[1]])], incises


def _quote(text: str, start: int, body: int, end: int, marker: str, closing: bool) -> Quote | None:
    segments, incises = split_incises(text, start, body, end)
    if not closing:
        segments, incises = _drop_narration(text, segments, incises)
    if not segments:
        return None
    if closing and text[end - 1] in "»”" and not text[segments[-1][1]:end].strip(_SPACES + "»”"):
        segments[-1] = (segments[-1][0], end)
    s, e = segments[0][0], segments[-1][1]
    return Quote(text[s:e], s, e, tuple(segments), marker, tuple(incises))


_SENTENCE = re.compile(r".+?(?:[.!?…]+(?=\s+[«—–-]*\s*[A-ZÀ-Ý])|$)", re.S)


def _drop_narration(text: str, segments, incises):
    """A dash paragraph may go back to the narrator after the words: cut the reply at the first
    sentence, past its first, that reads as narration (see looks_narrative)."""
    first = True
    for n, (a, b) in enumerate(segments):
        for k, m in enumerate(_SENTENCE.finditer(text, a, b)):
            if first and simple_past(m.group()):
                return segments, incises  # the speaker tells a story in the passé simple himself
            if not first and looks_narrative(m.group(), after_incise=k == 0):
                cut = trim_span(text, a, m.start())
                kept = segments[:n] + ([cut] if re.search(r"\w", text[cut[0]:cut[1]]) else [])
                return kept, [i for i in incises if kept and i[0] < kept[-1][1] + 2]
            first = False
    return segments, incises


def _closing_guillemet(text: str, a: int, b: int) -> int:
    """A reply inside a «...» dialogue ends at the » that closes the dialogue: « ... — Adieu. » Et..."""
    depth = 0
    for m in _GUILLEMET.finditer(text, a, b):
        if m.group() in "«“":
            depth += 1
        elif depth:
            depth -= 1
        else:
            return m.end()
    return b


def _dash_replies(text: str, start: int, end: int) -> list[Quote]:
    """The replies of a paragraph opened by a dialogue dash (a sentence-final "— " inside it
    starts the next speaker's reply)."""
    cuts = [start] + [m.end() - len(m.group().lstrip()) for m in _INNER_DASH.finditer(text, start, end)] + [end]
    out = []
    for a, b in zip(cuts, cuts[1:]):
        a, b = trim_span(text, a, _closing_guillemet(text, a, b))
        m = _DASH.match(text, a, b)
        if not m:
            continue
        q = _quote(text, a, m.end(), b, m.group().strip(), closing=False)
        if q:
            out.append(q)
    return out


def _is_term(text: str, a: int, b: int) -> bool:
    """«» inside a sentence around a few words mark a term, a title or irony, not speech:
    'des personnes « arrivées »', 'un tas de choses « qui pourraient servir »'."""
    inner = text[a + 1:b - 1].strip(_SPACES + "\n")
    before = text[max(0, a - 3):a].strip()
    if not inner or before.endswith((":", ".", "!", "?", "…")) or not before:
        return False
    words = len(inner.split())
    lower = inner[:1].islower()
    return lower and words <= 6 or words <= 3 and not re.search(r"[.!?…]", inner)


def _after_incise(text: str, qend: int, para_end: int) -> tuple[int, int] | None:
    """An incise right after a closing guillemet: « Soit », dit-il."""
    m = re.compile(r"\s*,?\s*").match(text, qend, para_end)
    pos = m.end() if m else qend
    if pos >= para_end or pos == qend:
        return None
    found = match_incise(text, pos, para_end)
    return (qend, found[1]) if found else None


def _addressed(text: str, start: int, end: int) -> bool:
    """Whether a quotation over several paragraphs speaks to someone (tu, vous) in its first one."""
    first = text[start:text.find("\n", start, end) if "\n" in text[start:end] else end]
    return _SECOND_PERSON.search(first) is not None


def _introduced(text: str, start: int) -> bool:
    """Whether the narration right before a quotation announces it with a colon."""
    return text[max(0, start - 40):start].rstrip(_SPACES + "\r\n").endswith(":")


class _Guillemets:
    """Scanner for «...» quotations: nesting, and quotes continued over paragraphs that open with «.
    A quotation over several paragraphs, or never closed, that no colon announces is a frame
    (a story told inside the story, a diary, a letter): dropped, the speech inside it is kept.
    French typography writes one » where a nested quotation and its outer one end together: when
    a paragraph leaves a quotation open after a nested one closed, both closed there."""

    def __init__(self, text: str):
        self.text, self.quotes = text, []
        self.start, self.depth, self.nested, self.multi, self.entry = None, 0, [], False, False
        self.merge: tuple[int, int] | None = None  # first nested » of this paragraph's quotation

    def scan(self, a: int, b: int, next_opens: bool, next_dash: bool = False, entry: bool = False) -> None:
        """One paragraph; entry: it follows a date heading, so a « opening it is a diary entry."""
        text = self.text
        for m in _GUILLEMET.finditer(text, a, b):
            c, p = m.group(), m.start()
            if c in "«“":
                if self.depth == 0:
                    self.start, self.depth, self.multi, self.entry = p, 1, False, entry and p == a
                    self.merge = None
                elif p == a:
                    self.multi = True
                else:
                    self.depth += 1
                    self.nested.append(p)
            elif self.depth > 1:
                self.depth -= 1
                inner = self.nested.pop()
                if self.depth == 1 and _introduced(text, inner):
                    self._add(inner, p + 1, b, closed=True)
                if self.depth == 1 and self.merge is None and not self.multi:
                    self.merge = (p, len(self.quotes))
            elif self.depth == 1:
                self.depth = 0
                if not self.entry and (not self.multi or _introduced(text, self.start)
                                       or _addressed(text, self.start, p)):
                    self._add(self.start, p + 1, b, closed=True)
        if self.depth == 1 and self.merge and not next_opens and self.start >= a:
            close, kept = self.merge
            del self.quotes[kept:]
            self.depth, self.nested, self.merge = 0, [], None
            if not self.entry:
                self._add(self.start, close + 1, b, closed=True)
            self.scan(close + 1, b, next_opens, next_dash)
            return
        if self.depth and not next_opens:
            # « opens a dialogue whose next replies come with dashes: keep the first reply
            if not self.multi and not self.entry and (next_dash or _introduced(text, self.start)):
                self._add(self.start, b, b, closed=False)
            self.depth, self.nested = 0, []

    def _add(self, start: int, end: int, para_end: int, closed: bool) -> None:
        text = self.text
        after = _after_incise(text, end, para_end) if closed else None
        if closed and not after and _is_term(text, start, end):
            return
        if not closed:  # a « paragraph never closed that turns to narration continues a told story
            segments, incises = split_incises(text, start, start + 1, end)
            if _drop_narration(text, segments, incises)[0] != segments:
                return
        q = _quote(text, start, start + 1, end, text[start], closing=closed)
        if q is None:
            return
        if after:
            q = dataclasses.replace(q, incises=q.incises + (after,))
        self.quotes.append(q)


_MONTHS = "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split()
# "Mardi, 22 novembre.", "Paris, 4 décembre 1803." alone on a line: the heading of a diary entry or letter
_DATE_HEADING = re.compile(r"(?:[A-ZÀ-Ý][\w'’-]*(?:\s+[\w'’-]+){0,3},\s+)?(?:(?:lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche),?\s+)?(?:le\s+)?"
                           r"\d{1,2}(?:er)?\s+(?:" + "|".join(_MONTHS) + r")(?:\s+\d{4})?\s*[.:]?", re.I)


def detect_quotations(text: str, paras: list[tuple[int, int]] | None = None) -> list[Quote]:
    """Direct-speech quotations in text order, without speakers."""
    paras = paragraphs(text) if paras is None else paras
    scanner = _Guillemets(text)
    quotes: list[Quote] = []
    entry = False  # inside a diary: a date heading, then paragraphs that open with «
    for i, (a, b) in enumerate(paras):
        next_opens = i + 1 < len(paras) and text[paras[i + 1][0]] in "«»“"
        entry = text[a] in "«“" and (entry or i > 0 and _DATE_HEADING.fullmatch(text, *paras[i - 1]) is not None)
        if scanner.depth == 0 and _DASH.match(text, a, b):
            quotes.extend(_dash_replies(text, a, b))
            continue
        before = len(scanner.quotes)
        scanner.scan(a, b, next_opens, i + 1 < len(paras) and _DASH.match(text, *paras[i + 1]) is not None,
                     entry)
        found = scanner.quotes[before:]
        quotes.extend(found)
        for m in _COLON_DASH.finditer(text, a, b):
            d = m.start("dash")
            if not any(q.start <= d < q.end for q in found):
                quotes.extend(_dash_replies(text, d, b))
    quotes.sort(key=lambda q: q.start)
    return quotes


def find_quotations(text: str) -> list[Quote]:
    """Every direct-speech quotation of a French text with its attributed speaker (or None)."""
    paras = paragraphs(text)
    return attribute(text, detect_quotations(text, paras), paras)


def character_quotes(text: str, name: str, aliases=()) -> list[Quote]:
    """The rule method of extraction: quotations whose speaker is the character or an alias."""
    return [q for q in find_quotations(text) if is_character(q.speaker, name, aliases)]


@lru_cache(maxsize=64)
def _alias_regex(name: str, aliases: tuple[str, ...]) -> re.Pattern | None:
    forms = sorted({normalise_speaker(a) for a in (name, *aliases)} - {""}, key=len, reverse=True)
    if not forms:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(f) for f in forms) + r")(?!\w)")


def mentions_character(text: str, name: str, aliases=()) -> bool:
    """Whether text names the character or an alias (case, accents, hyphens and apostrophes ignored):
    the pre-filter that lets the LLM method skip chunks."""
    pattern = _alias_regex(name, tuple(aliases))
    return pattern is not None and pattern.search(fold(text)) is not None


def all_speakers_rows(text: str) -> list[dict]:
    """One row per quotation for `extract --all-speakers`: text (== source[start:end]), speaker (or
    None), start, end (str indices = code points), speech (incises cut out), segments, mention, cue."""
    rows = []
    for q in find_quotations(text):
        rows.append({"text": q.text, "speaker": q.speaker, "start": q.start, "end": q.end,
                     "speech": q.speech(text), "segments": [list(s) for s in q.segments],
                     "mention": q.mention, "cue": q.cue})
    return rows

