"""French speaker attribution for direct speech: incises, subjects, pronouns, names, turn-taking."""

from __future__ import annotations

import bisect
import dataclasses
import re
import unicodedata
from functools import lru_cache

from dantes_mlx.dialogue_lexicon import (ADVERBS, AUXILIARIES, CLITICS, DETS, DETS_F, DETS_M, FUNCTION, INVERTED,
                                         NOT_VERBS, NP_STOP, PRONOUNS, SPEECH_FORMS, SPEECH_PARTICIPLES,
                                         SPEECH_PARTICIPLES_PAST, TITLES_F, TITLES_M, TOKEN, VERB_END, names_in,
                                         person_like)
from dantes_mlx.dialogue_narrator import first_person_kind, is_first_person


@dataclasses.dataclass(frozen=True)
class Mention:
    """A noun phrase or pronoun naming (or standing for) a speaker."""
    text: str
    start: int
    end: int
    gender: str | None = None
    pronoun: bool = False


def tokens(s: str, base: int = 0) -> list[tuple[str, int, int]]:
    """Words, elided articles and punctuation of s with offsets shifted by base."""
    s = s.replace("’", "'")  # same length: offsets hold
    return [(m.group(), base + m.start(), base + m.end()) for m in TOKEN.finditer(s)]


_low = str.lower


def _is_cap(t: str) -> bool:
    return t[:1].isupper() and _low(t) not in FUNCTION and t[:1].isalpha()


def is_verb_like(t: str) -> bool:
    """A lowercase word that may be a finite verb of narration (speech verb, or a past/present ending)."""
    low = _low(t)
    if not low[:1].isalpha() or t[:1].isupper():
        return False
    return low in SPEECH_FORMS or low in ("a", "va", "est", "fut", "eut") or (
        len(low) > 2 and low not in NOT_VERBS and bool(VERB_END.search(low)))


def noun_phrase(toks, i: int, subject: bool = False, partitive: bool = False) -> tuple[Mention, int] | None:
    """The noun phrase or subject pronoun at toks[i] and the index after it. subject=True keeps it
    short so that the verb after a subject is not swallowed ("Le major quitta sa pipe")."""
    n = len(toks)
    if i >= n:
        return None
    low = _low(toks[i][0])
    if low in _SUBJECT_PRONOUNS:
        return Mention(toks[i][0], toks[i][1], toks[i][2], PRONOUNS.get(low), True), i + 1
    if low in ("l'", "quelqu'") and i + 1 < n and _low(toks[i + 1][0]) in ("un", "une", "autre"):
        k = i + 2
        if k < n and toks[k][0][:1].isalpha() and _low(toks[k][0]) not in {"d'", "de", "des"} | CLITICS:
            pass  # "l'autre monsieur": a noun phrase, read below
        else:
            if k + 1 < n and _low(toks[k][0]) in ("d'", "de") and _low(toks[k + 1][0]) in ("eux", "elles", "entre"):
                k += 2
            gender = {"un": "m", "une": "f"}.get(_low(toks[i + 1][0])) if low == "l'" else None
            return Mention("", toks[i][1], toks[k - 1][2], gender, True), k
    j, gender = (i + 1 if partitive else i), None
    if low in ("tous", "toutes") and i + 1 < n and _low(toks[i + 1][0]) in DETS:
        j += 1
    while j < n and _low(toks[j][0]) in DETS:
        d = _low(toks[j][0])
        gender = gender or ("m" if d in DETS_M else "f" if d in DETS_F else None)
        j += 1
    if j >= n or not toks[j][0][:1].isalpha() or j == i and not (
            _is_cap(toks[i][0]) or partitive or low in TITLES_M | TITLES_F):
        return None
    head = _low(toks[j][0])
    gender = gender or ("m" if head in TITLES_M else "f" if head in TITLES_F else None)
    k, lowers = j, 0
    while k < n:
        t, lw = toks[k][0], _low(toks[k][0])
        if k > j and lw in ("de", "d'", "du") and k + 1 < n and _is_cap(toks[k + 1][0]):
            k += 2
            continue
        if not t[:1].isalpha() or k > j and (lw in NP_STOP or lw in CLITICS or lw in DETS):
            break
        if t[:1].isupper() or k == j:
            k += 1
            continue
        if subject and is_verb_like(t) or lw.endswith("ant") and len(lw) > 4 or lw in SPEECH_FORMS:
            break
        if lw in ("de", "d'", "des", "du") or lowers >= (1 if subject else 2):
            break
        lowers += 1
        k += 1
    return Mention("", toks[i][1], toks[k - 1][2], gender), k


_SUBJECT_PRONOUNS = {"il", "elle", "ils", "elles", "je", "j'", "on", "celui-ci", "celle-ci", "celui-là",
                     "celle-là", "ceux-ci", "celles-ci", "chacun", "chacune"}


_NP_OPENERS = DETS | TITLES_M | TITLES_F | _SUBJECT_PRONOUNS | {"l'", "quelqu'", "tous", "toutes"}


def _with_text(m: Mention, source: str) -> Mention:
    return Mention(source[m.start:m.end], m.start, m.end, m.gender, m.pronoun)


_PP = {"à", "au", "avec", "d'", "en", "tout", "sans", "sur", "dans"}


def _skip_adverbs(toks, k: int) -> int:
    while k < len(toks) and (_low(toks[k][0]) in ADVERBS or toks[k][0].endswith("ment")):
        k += 1
    return k


def subject_after_verb(toks, k: int) -> tuple[Mention, int] | None:
    """The inverted subject after a speech verb at toks[k-1]: "dit enfin Laurence", "dit à sa
    voisine une dame", "disaient de jeunes politiques"."""
    k = _skip_adverbs(toks, k)
    found = noun_phrase(toks, k)
    if found:
        return found
    if k + 1 < len(toks) and _low(toks[k][0]) in ("de", "d'") and toks[k + 1][0][:1].islower():
        return noun_phrase(toks, k, partitive=True)
    if k < len(toks) and _low(toks[k][0]) in _PP:
        inner = noun_phrase(toks, k + 1)
        j = _skip_adverbs(toks, inner[1] if inner else k + 2)
        found = noun_phrase(toks, j)
        if found and not found[0].pronoun:
            return found
    return None


def incise_speaker(source: str, start: int, end: int) -> Mention | None:
    """The speaker named in an incise such as "dit-il" or "répondit le jeune homme"."""
    toks = tokens(source[start:end], start)
    i = 0
    while i < len(toks) and (_low(toks[i][0]) in CLITICS or not toks[i][0][:1].isalpha()):
        i += 1
    if i >= len(toks):
        return None
    inv = INVERTED.match(toks[i][0])
    if inv:
        pron = _low(inv.group("pron"))
        s = toks[i][2] - len(inv.group("pron"))
        return Mention(source[s:toks[i][2]], s, toks[i][2], PRONOUNS.get(pron), True)
    found = subject_after_verb(toks, i + 1)
    return _with_text(found[0], source) if found else None


_SENT_END = re.compile(r"[.!?…]+[»\s]*(?=[«—–\-]*\s*[A-ZÀ-Ý])|[;:]")


def last_clause(source: str, start: int, end: int) -> tuple[int, int]:
    """The last clause of source[start:end]: after its last sentence end, ';' or ':' before the end."""
    seg = source[start:end].rstrip(" \t:,«—–-\r\n")
    cut = 0
    for m in _SENT_END.finditer(seg):
        if m.end() < len(seg):
            cut = m.end()
    return start + cut, start + len(seg)


_TIME_NOUNS = set("""jour jours lendemain veille soir soirs matin matins moment instant fois nuit heure
heures minute minutes semaine mois an ans année temps midi minuit printemps été automne hiver
dimanche lundi mardi mercredi jeudi vendredi samedi""".split())


def _skip_clitics(toks, k: int) -> int:
    while k < len(toks) and _low(toks[k][0]) in CLITICS:
        k += 1
    return k


def _skip_inserts(toks, j: int) -> int:
    """Past up to three comma-delimited inserts after a subject (", exaspérée,") when a verb follows."""
    k = j
    for _ in range(3):
        k = next((x for x in range(k + 1, min(len(toks), k + 21)) if toks[x][0] == ","), None)
        if k is None:
            return j
        nxt = _skip_clitics(toks, k + 1)
        if nxt < len(toks) and is_verb_like(toks[nxt][0]):
            return k + 1
    return j


def subject_verb_pairs(source: str, toks) -> list[tuple[Mention, bool]]:
    """(subject, its verb is a speech verb) for each noun phrase or pronoun followed, past
    comma-delimited inserts, "qui" and clitics, by a verb: "La fille, exaspérée, lui cria"."""
    return [(m, _low(verb) in SPEECH_FORMS or _low(verb) in SPEECH_PARTICIPLES or _low(verb) in SPEECH_PARTICIPLES_PAST)
            for m, verb in subject_verbs(source, toks)]


_COMPLEMENT_PREPS = {"par", "de", "d'", "du", "des", "à", "au", "aux", "avec", "dans", "sur", "pour", "contre"}
_PARTICIPLE_END = re.compile(r"[^\W\d_]{2,}(?:é|ée|és|ées|i|ie|is|ies|u|ue|us|ues|it|ite|ert|erte|eint|einte)$")


def _past_complement(toks, mention: Mention, i: int, j: int) -> tuple[Mention, int] | None:
    """"mon père agacé par mon insistance finit par...": a noun phrase ending in a past participle
    followed by its complement; returns the subject without the participle and the index of the verb."""
    if j - i < 2 or j + 1 >= len(toks) or _low(toks[j][0]) not in _COMPLEMENT_PREPS:
        return None
    part = toks[j - 1]
    if not _PARTICIPLE_END.search(_low(part[0])) or is_verb_like(part[0]):
        return None
    inner = noun_phrase(toks, j + 1, subject=True)
    if inner is None or inner[0].pronoun:
        return None
    k = _skip_clitics(toks, inner[1])
    if k < len(toks) and is_verb_like(toks[k][0]):
        return Mention("", mention.start, toks[j - 2][2], mention.gender), k
    return None


def subject_verbs(source: str, toks) -> list[tuple[Mention, str]]:
    """(subject, its verb) pairs, as subject_verb_pairs finds them."""
    pairs, inside = [], 0  # inside: end of a complement already read as part of a subject
    for i, (word, _, _) in enumerate(toks):
        if i < inside or not (word[:1].isupper() or _low(word) in _NP_OPENERS):
            continue
        found = noun_phrase(toks, i, subject=True)
        if not found:
            continue
        mention, j = found
        inside = j  # "Ma mère répondit": not "mère répondit" again
        if _low(source[mention.start:mention.end].split()[-1]) in _TIME_NOUNS:
            continue
        if j < len(toks) and toks[j][0] == "," and not mention.pronoun:
            j = _skip_inserts(toks, j)
        if not mention.pronoun and j < len(toks) and (
                skipped := _past_complement(toks, mention, i, j)) is not None:
            mention, j = skipped
            inside = j
        if j < len(toks) and _low(toks[j][0]) in SPEECH_PARTICIPLES and not mention.pronoun:
            pairs.append((_with_text(mention, source), toks[j][0]))
            continue
        relative = j < len(toks) and _low(toks[j][0]) == "qui"
        j = _skip_clitics(toks, j + relative)
        if j + 1 < len(toks) and _low(toks[j][0]) in AUXILIARIES:
            k = _skip_adverbs(toks, j + 1)
            if k < len(toks) and _low(toks[k][0]) in SPEECH_PARTICIPLES_PAST:  # "Élisabeth a écrit :"
                pairs.append((_with_text(mention, source), toks[k][0]))
                continue
        if j < len(toks) and is_verb_like(toks[j][0]):
            main = _main_speech_verb(toks, j + 1) if relative and not mention.pronoun else None
            if main is not None:  # "Le vieux qui fumait sa pipe répondit :"
                pairs.append((_with_text(mention, source), toks[main][0]))
                inside = main + 1
                continue
            pairs.append((_with_text(mention, source), toks[j][0]))
    return pairs


def _main_speech_verb(toks, k: int) -> int | None:
    """After a subject's relative clause ("qui fumait sa pipe"), the index of the speech verb that
    follows its complement within a few words, if any."""
    for x in range(k, min(len(toks), k + 8)):
        low = _low(toks[x][0])
        if not toks[x][0][:1].isalpha() or low in ("qui", "que", "qu'", "et", "mais"):
            return None
        if low in SPEECH_FORMS:
            return x
    return None


def clause_subject(source: str, start: int, end: int) -> Mention | None:
    """The subject of the narrative clause that introduces a reply: the one of a speech verb if
    any ("Leurs mains étaient jointes, quand Bouvard dit :"), else the last one before the end."""
    pairs = subject_verb_pairs(source, tokens(source[start:end], start))
    speech = [m for m, is_speech in pairs if is_speech]
    return speech[-1] if speech else pairs[-1][0] if pairs else None


@lru_cache(maxsize=65536)
def normalise_speaker(name: str) -> str:
    """Case-, accent-, apostrophe- and hyphen-insensitive form of a name ("Monte-Cristo" -> "monte cristo")."""
    return fold(name)


def fold(name: str) -> str:
    """normalise_speaker without the cache, for long texts."""
    s = unicodedata.normalize("NFKD", name.replace("’", "'").replace("œ", "oe").replace("Œ", "Oe"))
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    s = re.sub(r"[-_]", " ", s)
    s = re.sub(r"\s+", " ", re.sub(r"[^\w' ]", " ", s))
    return s.strip()


@lru_cache(maxsize=256)
def _alias_patterns(name: str, aliases: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """(normalised alias, allows containment) for the character's name and aliases."""
    out = []
    for a in (name, *aliases):
        n = normalise_speaker(a)
        if n:
            proper = a.strip()[:1].isupper() and n.split()[0] not in DETS
            out.append((n, proper))
    return tuple(out)


def is_character(speaker: str | None, name: str, aliases=()) -> bool:
    """Whether a surface speaker string names the character: exact (normalised) for common-noun
    aliases ("le comte"), whole-word containment for proper names ("M. Dantès" ~ "Dantès")."""
    if not speaker:
        return False
    s = f" {normalise_speaker(speaker)} "
    for alias, proper in _alias_patterns(name, tuple(aliases)):
        if s.strip() == alias or proper and f" {alias} " in s:
            return True
    return False


def name_genders(source: str) -> dict[str, str]:
    """Gender votes for capitalised names: a sentence opening with "Il"/"Elle" right after one
    whose subject is the name, and titles ("madame Rose", "M. Morrel")."""
    votes: dict[str, list[int]] = {}
    prev = None
    for m in re.finditer(r"(?:[.!?…][ \t]+|\n[ \t]*)([A-ZÀ-Ý][\w'’-]*)", "\n" + source):
        first = m.group(1)
        if first in ("Il", "Elle") and prev:
            votes.setdefault(prev, [0, 0])[first == "Elle"] += 1
        prev = None if _low(first) in FUNCTION else normalise_speaker(first)
    for m in re.finditer(r"\b(M\.|monsieur|Monsieur|madame|Madame|Mme|mademoiselle|Mademoiselle|Mlle)"
                         r"\s+(?:de\s+)?([A-ZÀ-Ý][\w-]+)", source):
        fem = m.group(1).lower() not in ("m.", "monsieur")
        votes.setdefault(normalise_speaker(m.group(2)), [0, 0])[fem] += 3
    return {k: ("f" if f > m else "m") for k, (m, f) in votes.items() if m != f}


_SENTENCE = re.compile(r"[^.!?…:;]+[.!?…:;]*")
_WINDOW = 3000  # characters back in which a pronoun looks for its antecedent


def _subjects(source: str, start: int, end: int, last: int = 3) -> list[Mention]:
    """Named subjects of the last few sentences of a narrative stretch, in text order."""
    spans = [(m.start(), m.end()) for m in _SENTENCE.finditer(source, max(start, end - 1500), end)
             if re.search(r"\w", m.group())][-last:]
    if not spans:
        return []
    a, b = spans[0][0], spans[-1][1]
    return [m for m, _ in subject_verb_pairs(source, tokens(source[a:b], a)) if not m.pronoun]


def _gender(m: Mention, genders: dict[str, str]) -> str | None:
    if m.gender:
        return m.gender
    words = normalise_speaker(m.text).split()
    return genders.get(words[-1]) if words else None


def _introducer(source: str, start: int, end: int) -> Mention | None:
    """Subject of the narration just before a reply: its last clause, else its last sentence."""
    a, b = last_clause(source, start, end)
    m = clause_subject(source, a, b) if b > a else None
    if m is None:
        sent = [x.start() for x in re.finditer(r"[.!?…]+\s+", source[start:b])]
        a2 = start + (sent[-1] if sent else 0)
        m = clause_subject(source, a2, b) if a2 < a else None
    return m


def _bare(name: str) -> str:
    """Normalised name without its leading articles and titles: "le jeune homme" -> "jeune homme"."""
    words = normalise_speaker(name).replace("'", "' ").split()
    while len(words) > 1 and (words[0] in DETS or words[0] in ("l'", "m", "mme", "mlle")):
        words = words[1:]
    return " ".join(words)


RUN_GAP = 400  # characters of narration that end an exchange


class _Attributor:
    """Walks the quotations in order, keeping the recent named mentions and the current exchange."""

    def __init__(self, source: str, paras, chooser=None):
        self.source, self.paras, self.chooser = source, paras, chooser
        self.starts = [a for a, _ in paras]
        self.genders = name_genders(source)
        self.names = names_in(source)
        self.recent: list[Mention | tuple[int, int]] = []  # mentions, and narration read lazily
        self.run: list[Mention] = []
        self._persons: dict[Mention, bool] = {}

    def is_person(self, m: Mention) -> bool:
        """person_like(m, the text's names), remembered: a pronoun looks back at the same 30 mentions again and again."""
        known = self._persons.get(m)
        if known is None:
            if len(self._persons) > 50_000:  # a whole novel: only recent mentions are looked at again
                self._persons.clear()
            known = self._persons[m] = person_like(m, self.names)
        return known

    def para_of(self, pos: int) -> int:
        """Index of the paragraph holding pos."""
        return max(0, bisect.bisect_right(self.starts, pos) - 1)

    def _expand_recent(self, want: int = 30) -> list[Mention]:
        """The last `want` mentions, reading the subjects of narration stretches only when needed.

        Stretches are expanded in place from the end backwards until `want` mentions follow the
        current entry: one that holds no subject shrinks the list, so older entries come into reach
        and are expanded in turn; every entry returned is a Mention."""
        recent, i, mentions = self.recent, len(self.recent), 0
        while i > 0 and mentions < want:
            i -= 1
            if isinstance(recent[i], tuple):
                found = _subjects(self.source, *recent[i])
                recent[i:i + 1] = found
                mentions += len(found)
            else:
                mentions += 1
        return recent[-want:]

    def resolve(self, pron: Mention, prev: Mention | None) -> Mention | None:
        """Antecedent of il/elle: the latest compatible named mention, preferring, inside an
        exchange, someone other than the previous speaker."""
        low = pron.text.lower().replace("’", "'")
        if low in ("je", "j'"):
            return pron
        if low == "on":
            return None
        if low not in ("il", "elle", "ils", "elles", "celui-ci", "celle-ci", "celui-là", "celle-là"):
            return pron  # "l'un d'eux", "quelqu'un": the words themselves are the best name
        want = pron.gender
        near = [m for m in reversed(self._expand_recent())
                if 0 <= pron.start - m.end < _WINDOW and self.is_person(m)]
        genders = [_gender(m, self.genders) for m in near]
        # a mention of the right known gender beats a more recent one of unknown gender
        cands = [m for m, g in zip(near, genders) if g == want] or \
            [m for m, g in zip(near, genders) if g is None]
        if not cands:
            return None
        if prev is not None and normalise_speaker(cands[0].text) == normalise_speaker(prev.text):
            in_run = {normalise_speaker(r.text) for r in self.run} - {normalise_speaker(prev.text)}
            others = [m for m in cands if normalise_speaker(m.text) in in_run]
            if others:
                return others[0]
        return cands[0]

    def cue(self, q, gap_start: int) -> tuple[str | None, Mention | None]:
        """How the text names who speaks q: an incise, the narration just before it in its
        paragraph, or the narrative paragraph before the reply (a name, a title or a colon)."""
        src = self.source
        for a, b in q.incises:
            m = incise_speaker(src, a, b)
            if m:
                return "incise", m
        pi = self.para_of(q.start)
        pa = self.paras[pi][0]
        if src[max(pa, gap_start):q.start].strip(" \t\u00a0\r\n«"):
            m = _introducer(src, max(pa, gap_start), q.start)
            return ("before", m) if self.introduces(m, q.start) else (None, None)
        if pi > 0 and gap_start <= self.paras[pi - 1][0]:
            pa, pb = self.paras[pi - 1]
            m = _introducer(src, pa, pb)
            if self.introduces(m, pb) and (src[pa:pb].rstrip().endswith(":") or person_like(m, self.names)):
                return "previous", m
        return None, None

    def introduces(self, m: Mention | None, until: int) -> bool:
        """A subject in the narration ending at `until` names the speaker of the reply after it; the
        narration's "je" only as dialogue_narrator says ("je lui dis :", not "je ne voyais rien.")."""
        if m is None or not is_first_person(m.text):
            return m is not None
        return first_person_kind(self.source, m.start, m.end, until) is not None

    def __call__(self, quotes):
        """The quotations, in order, with their speakers; uncued replies in an exchange alternate."""
        src, out = self.source, []
        prev_end, prev_speaker = 0, None
        for q in quotes:
            gap_start = max([prev_end] + [b for _, b in (out[-1].incises if out else ())])
            gap = src[gap_start:q.start]
            adjacent = bool(out) and not gap.strip(" \t\u00a0\r\n")
            if gap.strip() and len(gap) > RUN_GAP:
                self.run = []
            if gap.strip():
                self.recent.append((gap_start, q.start))
            cue, mention = self.cue(q, gap_start)
            if self.chooser is not None and cue != "incise":  # a ranker (dialogue_ranker); None keeps the rules' cue
                ranked = self.chooser(self, q, gap_start, mention, prev_speaker if adjacent else None)
                cue, mention = ranked or (cue, mention)
            speaker = mention
            if mention is not None and mention.pronoun:
                speaker = self.resolve(mention, prev_speaker if adjacent else None)
            if cue is None and adjacent and prev_speaker is not None:
                said = f" {normalise_speaker(q.text)} "
                other = [m for m in reversed(self.run[-3:])
                         if normalise_speaker(m.text) != normalise_speaker(prev_speaker.text)
                         and f" {_bare(m.text)} " not in said]  # a name in the reply is the addressee
                if other:
                    cue, speaker = "alternation", other[0]
            if speaker is not None and not is_first_person(speaker.text):
                self.recent.append(speaker)
            if speaker is not None:
                self.run.append(speaker)
            del self.recent[:-100], self.run[:-20]  # only the recent past matters
            out.append(dataclasses.replace(
                q, speaker=speaker.text if speaker else None,
                speaker_start=speaker.start if speaker else None,
                speaker_end=speaker.end if speaker else None,
                mention=mention.text if mention else None, cue=cue))
            prev_end, prev_speaker = q.end, speaker
        return out


def attribute(source: str, quotes, paras, chooser=None) -> list:
    """The quotations with speaker, mention and cue filled in (dataclasses.replace on each). Where no incise names
    the speaker, `chooser(attributor, quote, gap_start, rule mention, previous speaker)` may override the rules'
    cue: (cue, mention), or None to keep it."""
    return _Attributor(source, paras, chooser)(quotes)
