"""Reply boundaries in French direct speech: incises cut out of a reply, and where narration resumes."""

from __future__ import annotations

import re

from dantes_mlx.fr.lexicon import ADJ_COMPLEMENT, DETS, INVERTED, PRESENT_FORMS, SPEECH_FORMS
from dantes_mlx.fr.mentions import is_verb_like, subject_after_verb, subject_verbs, tokens

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
# or an adjective and its complement: "dit-il, pâle de colère"
_PAST_PARTICIPLE = (r"(?:tout\s+)?(?:[^\W\d_]{2,}(?:é|ée|és|ées|i|ie|is|u|ue|us)\s+"
                    r"(?:sur|vers|par|contre|dans|sous|entre|avec|à|au|aux|de|d['’]|du|des)\s|"
                    r"(?:" + "|".join(ADJ_COMPLEMENT) + r")\s+(?:à|au|aux|de|d['’]|du|des)\b)")
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
    r"\b(?:[^\W\d_]{3,}(?:èrent|irent|urent|inrent)|(?:il|elle|on|qui|chacun|chacune|tout)\s+" + _CLITIC_RE +
    r"(?:(?!va\b|[^\W\d_]*ra\b|voilà\b|cela\b)[^\W\d_]{2,}a|" + "|".join(_PASSE_SIMPLE) + r"))\b", re.I)
_PERSON = re.compile(r"\b(?:je|tu|vous|nous|mon|ma|mes|ton|ta|tes|votre|vos|notre|nos|moi|toi|me|te)\b|"
                     r"\b[jmt]['’]", re.I)
SECOND_PERSON = re.compile(r"\b(?:tu|vous|ton|ta|tes|votre|vos|toi|te)\b|\bt['’]", re.I)
_IMPERFECT = re.compile(r"\b[^\W\d_]{2,}(?<![rf])(?:ait|aient)\b", re.I)


def looks_narrative(sentence: str, after_incise: bool = False) -> bool:
    """Whether a sentence inside a dash paragraph is the narrator's, not the speaker's: no 1st/2nd
    person, "?" or "!", and a 3rd-person passé simple ("il tomba", "ils dirent"); right after an
    incise ("..., répliqua Bouvard. Ceux de Pécuchet étaient...") an imperfect is enough."""
    if re.search(r"[?!]", sentence) or _PERSON.search(sentence):
        return False
    return (after_incise and _IMPERFECT.search(sentence) is not None and not _COMMENT.match(sentence)
            or simple_past(sentence))


_COMMENT = re.compile(r"\s*(?:c['’]|ça\b|cela\b)", re.I)  # "C'était magnifique.": the speaker's comment


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
            if chunk.strip() and (opener and not SECOND_PERSON.search(chunk)
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


# --- replies: incises cut out, narration cut off

_BREAK = re.compile(r"(?:,|;|!|\?|…|\.\.\.)\s+")  # inside a paragraph a newline is a wrap


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


_SENTENCE = re.compile(r".+?(?:[.!?…]+(?=\s+[«—–-]*\s*[A-ZÀ-Ý])|$)", re.S)


def drop_narration(text: str, segments, incises):
    """A dash paragraph may go back to the narrator after the words: cut the reply at the first
    sentence, past its first, that reads as narration (see looks_narrative)."""
    first, exclaimed = True, False
    for n, (a, b) in enumerate(segments):
        for k, m in enumerate(_SENTENCE.finditer(text, a, b)):
            if first and simple_past(m.group()):
                return segments, incises  # the speaker tells a story in the passé simple himself
            if not first and looks_narrative(m.group(), after_incise=k == 0 or exclaimed):
                cut = trim_span(text, a, m.start())
                kept = segments[:n] + ([cut] if re.search(r"\w", text[cut[0]:cut[1]]) else [])
                return kept, [i for i in incises if kept and i[0] < kept[-1][1] + 2]
            first, exclaimed = False, m.group().rstrip().endswith(("?", "!"))
    return segments, incises


_CLAUSE = re.compile(r",\s+([^,;.!?…]+[.;!?…]?)")


def cut_narrative_clause(text: str, segments, incises):
    """A reply opened by a dash inside a narrative paragraph ("À ce mot : — Voici les gardes,
    chacun courut.") gives way to the narrator at a clause in the passé simple after a comma."""
    for n, (a, b) in enumerate(segments):
        for m in _CLAUSE.finditer(text, a, b):
            if looks_narrative(m.group(1)):
                kept = segments[:n] + [trim_span(text, a, m.start())]
                return kept, [i for i in incises if i[0] < kept[-1][1] + 2]
    return segments, incises
