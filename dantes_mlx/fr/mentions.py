"""French noun phrases and clause subjects near a reply: who an incise or the narration names (tokens, mentions)."""

from __future__ import annotations

import dataclasses
import re

from dantes_mlx.fr.lexicon import (ADVERBS, AUXILIARIES, CLITICS, DETS, DETS_F, DETS_M, FUNCTION, INVERTED, NOT_VERBS,
                                   NP_STOP, PRONOUNS, SPEECH_FORMS, SPEECH_PARTICIPLES, SPEECH_PARTICIPLES_PAST,
                                   TITLES_F, TITLES_M, TOKEN, VERB_END)


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
