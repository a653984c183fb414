"""French speaker attribution for direct speech: the cue of each reply, names, pronouns resolved, turn-taking."""

from __future__ import annotations

import bisect
import dataclasses
import re
from functools import lru_cache

from dantes_mlx.fr.lexicon import DETS, FUNCTION, names_in, person_like
from dantes_mlx.fr.mentions import Mention, clause_subject, incise_speaker, last_clause, subject_verb_pairs, tokens
from dantes_mlx.fr.narrator import first_person_kind, is_first_person
from dantes_mlx.fr.text import fold_name


@lru_cache(maxsize=65536)
def normalise_speaker(name: str) -> str:
    """Case-, accent-, apostrophe- and hyphen-insensitive form of a name ("Monte-Cristo" -> "monte cristo")."""
    return fold_name(name)


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
        prev = None if first.lower() in FUNCTION else normalise_speaker(first)
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
        narration's "je" only as narrator.py says ("je lui dis :", not "je ne voyais rien.")."""
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
            if self.chooser is not None and cue != "incise":  # a ranker (fr/ranker.py); None keeps the rules' cue
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
