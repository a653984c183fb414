"""French lexicon for dialogue attribution: speech verbs, pronouns, determiners, titles, people, token patterns."""

from __future__ import annotations

import re

# Speech verbs as infinitive stems (without the -er/-ir/-re ending) for regular -er verbs, plus the
# irregular and -ir/-re verbs spelled out. Used for incises with a noun subject ("répondit le
# postillon"); incises with an inverted pronoun ("dit-il", "pensa-t-elle") need no lexicon.
ER_STEMS = """acquiesc affirm ajout annonc appel approuv articul assur avou balbuti bavard bégay
bougonn bredouill chantonn chuchot command commenc concéd confess confi conseill consol constat
continu coup cri déclam déclar demand dict éclat écri exclam expliqu glouss gouaill grogn grommel
grond hasard hurl implor indiqu inform insinu insist interpell interrog invit jur lanc marmonn
marmott maugré murmur not object observ ordonn pens persifl piaill plaid plaisant pleurnich précis
proclam prononc propos protest questionn racont rappel râl récit réclam recommenc rectifi réitér
remarqu répét répliqu rétorqu ricann ripost sanglot siffl song soupir souffl suggér suppli tonn
trépign""".split()
IRREGULAR = """dit dis disait disaient dirent disais fit fis faisait faisaient firent reprit repris
reprenait reprenaient reprirent reprend reprenais répondit répondis répondait répondaient répondirent
répond répondais interrompit interrompis interrompait interrompais interrompt poursuivit poursuivis
poursuivait poursuivais poursuit conclut conclus
concluait repartit repartis repartait enquit gémit gémissait rugit glapit mugit sourit souriait rit
riait écrivit écrivait écrit écrivis lut lisait admit admettait consentit promit promettait convint
convenait avertit avertissait bondit frémit pâlit rougit geignit plaignit""".split()


def er_forms(stem: str) -> list[str]:
    """Conjugated narrative forms of an -er verb (3rd/1st person, past and present)."""
    soft = stem[:-1] + "ç" if stem.endswith("c") else stem
    ge = stem + "e" if stem.endswith("g") else soft
    return [ge + "a", stem + "ait", stem + "aient", stem + "e", stem + "ent", stem + "èrent",
            ge + "ai", stem + "ais", ge + "ait", ge + "aient"]


SPEECH_FORMS = frozenset(f for s in ER_STEMS for f in er_forms(s)) | frozenset(IRREGULAR)
PRESENT_FORMS = frozenset(f for s in ER_STEMS for f in (s + "e", s + "ent")) | {"répond", "reprend", "interrompt"}
# "il entendit sa maîtresse disant à voix basse :": a noun phrase and a speech participle
SPEECH_PARTICIPLES = frozenset(s + "ant" for s in ER_STEMS) | {
    "disant", "répondant", "reprenant", "interrompant", "poursuivant", "concluant", "repartant", "s'écriant"}
# compound tenses: "Paul a répondu :", "ma mère m'avait dit :"
AUXILIARIES = {"a", "ai", "as", "avait", "avais", "eut", "ont", "avaient", "aura", "est", "était", "fut"}
SPEECH_PARTICIPLES_PAST = frozenset(s + "é" for s in ER_STEMS) | {
    "dit", "répondu", "repris", "interrompu", "poursuivi", "conclu", "écrit", "reparti", "écrié", "écriée"}

PRONOUNS = {"il": "m", "ils": "m", "elle": "f", "elles": "f", "je": "1", "j'": "1", "on": None,
            "celui-ci": "m", "celle-ci": "f", "celui-là": "m", "celle-là": "f", "nous": "1",
            "tu": None, "vous": None, "lui": "m", "moi": "1"}
CLITICS = {"lui", "leur", "me", "m'", "te", "t'", "nous", "vous", "se", "s'", "en", "y", "le",
            "la", "les", "l'", "ne", "n'"}
DETS_M = {"le", "un", "ce", "cet", "mon", "ton", "du", "au"}
DETS_F = {"la", "une", "cette", "ma", "ta"}
# Titles are the head of their noun phrase ("monsieur", "M. Morrel") but tell the gender.
TITLES_M = {"monsieur", "m.", "mm.", "messieurs", "maître", "oncle", "père", "frère", "sieur", "lord",
             "sir", "don", "monseigneur", "abbé", "comte", "baron", "marquis", "duc", "prince", "roi"}
TITLES_F = {"madame", "mme", "mlle", "mademoiselle", "tante", "mère", "sœur", "dame", "lady", "dona",
             "mesdames", "comtesse", "baronne", "marquise", "duchesse", "princesse", "reine"}
DETS = DETS_M | DETS_F | {"l'", "les", "des", "ces", "mes", "tes", "ses", "son", "sa", "notre",
                             "nos", "votre", "vos", "leur", "leurs", "chaque", "quelques", "deux",
                             "trois", "plusieurs", "aucun", "aucune", "tous", "toutes", "tout",
                             "toute", "celui", "celle", "ceux"}
# Capitalised words that start sentences but never name anyone.
FUNCTION = set("""mais et ou donc or ni car alors puis ensuite enfin soudain tout toute tous
toutes quand lorsque comme si cependant pourtant aussitôt bientôt déjà ainsi après avant dès
depuis pendant voici voilà oui non ah oh eh hé hélas ô au aux à a en dans sur sous pour par
avec sans chez vers pourquoi comment où que qui quoi quel quelle c' ce cela ça ceci il elle
ils elles je j' nous vous tu on là ici d' de du des un une le la les l' y dieu seigneur
puisque parce ensemble encore jamais toujours demain hier""".split())
ADVERBS = set("""enfin alors encore aussitôt ensuite puis tout bas haut doucement bien déjà
toujours ainsi soudain donc même aussi lentement vivement froidement gravement tristement
simplement tranquillement brusquement naïvement timidement""".split())
NP_STOP = set("""en avec à au aux dans sur sous pour par qui que qu' dont sans vers chez
comme lorsque quand et ou mais ne n' se s' lui leur y""".split())
VERB_END = re.compile(r"(?:a|ait|aient|it|irent|èrent|ut|urent|int|inrent|est|sont|va|vont|"
                       r"ai|is|us)$")
NOT_VERBS = set("""petit petits lit esprit nuit bruit fruit droit produit habit appétit récit
profit huit subit écrit gris marquis permis commis avis pays fils corps temps jus dessus
dessous tous plus moins très près lors puis depuis mais jamais assis surpris épris exquis
précis ravi aussi voici celui lui ami amis cela déjà voilà là""".split())

# Adjectives that describe a speaker with a complement after an incise: "dit-il, pâle de colère",
# "reprit-elle d'une voix étranglée, pareille à un râle".
ADJ_COMPLEMENT = """pareil pareille pareils pareilles semblable semblables prêt prête prêts prêtes plein pleine
pleins pleines rouge rouges pâle pâles blême blêmes ivre ivres fou folle fous folles fier fière fiers
fières heureux heureuse heureuses las lasse lasses""".split()

TOKEN = re.compile(r"[^\W\d_]+['’](?=\w)|\w+(?:[-.]\w+)*\.?(?<=M\.)|\w+(?:-\w+)*|[^\w\s]")
INVERTED = re.compile(r"^(?P<verb>[^\W\d_]+?)(?:-t)?-(?P<pron>il|elle|ils|elles|on|je)$", re.I)

# Nouns that name people: a pronoun's antecedent and a narrated speaker must be a person, a name or one
# of these ("la duègne", "une vieille femme", "des banquiers"), not "la lampe" or "un mouvement".
# Checked on the singular (a final s/x dropped).
HUMAN_NOUNS = frozenset("""homme femme fille garçon enfant gamin gamine bambin bébé vieillard vieille vieux
inconnu inconnue étranger étrangère voyageur voyageuse compagnon compagne ami amie camarade mari épouse
veuf veuve fiancé fiancée amant maîtresse hôte hôtesse fils neveu nièce cousin cousine papa maman
grand-père grand-mère aïeul aïeule parrain marraine bonne servante serviteur domestique valet laquais
majordome intendant cocher postillon palefrenier page soubrette nourrice gouvernante cuisinière cuisinier
concierge portier geôlier gardien sentinelle soldat sergent caporal officier capitaine lieutenant colonel
commandant général major amiral matelot marin mousse pilote patron armateur pêcheur paysan paysanne
fermier fermière meunier meunière berger bergère bûcheron charretier voiturier forgeron boulanger boucher
marchand marchande commis employé ouvrier ouvrière aubergiste cabaretier hôtelier banquier notaire avocat
juge procureur substitut magistrat commissaire gendarme policier espion médecin docteur chirurgien
pharmacien apothicaire prêtre curé vicaire moine religieuse évêque cardinal pape chanoine sacristain
bedeau professeur instituteur institutrice élève écolier étudiant savant poète peintre sculpteur artiste
musicien chanteur chanteuse cantatrice actrice acteur comédien comédienne danseur danseuse conteur
narrateur orateur écrivain auteur journaliste duègne blondin bandit brigand voleur assassin prisonnier
captif mendiant malade blessé mourant visiteur visiteuse interlocuteur interlocutrice convive voisin
voisine demoiselle gentilhomme chevalier vicomte vicomtesse héritier héritière individu cavalier
bourgeois bourgeoise roi reine empereur impératrice maraîcher maraîchère aveugle
partenaire gens petit petite capitano épicier épicière""".split())


_CAPITAL = re.compile(r"[A-ZÀ-ÝŒ][\w'’-]*")
_NOT_NAMES = frozenset(FUNCTION | DETS)
_PERSON_WORDS = frozenset(TITLES_M | TITLES_F | HUMAN_NOUNS)


def names_in(source: str) -> frozenset[str]:
    """Capitalised words that are names: written so inside a sentence, or never written in lower case
    ("Pécuchet", "Mme"), unlike the sentence openers "Ayant", "Souvent" or "La"."""
    lower = set(re.findall(r"(?<![\w'’-])[a-zà-ÿœ][\w'’-]*", source))
    out = set()
    for m in _CAPITAL.finditer(source):
        word = m.group().replace("’", "'")
        if word in out or word.lower() in _NOT_NAMES:
            continue
        before = source[max(0, m.start() - 3):m.start()].rstrip(" \t\u00a0")
        if before and before[-1] not in ".!?…:;«»\"“”—–-\n(" or m.group().lower() not in lower:
            out.add(word)
    return frozenset(out)


def person_like(m, names: frozenset[str] = frozenset()) -> bool:
    """A mention that stands for a person: a pronoun, a name of the text (see names_in), a title
    ("M. Morrel", "l'abbé") or a noun for people ("la duègne", "des banquiers"), not "la lampe"."""
    if m.pronoun:
        return True
    for w in re.split(r"[\s'’]+", m.text):
        low = w.lower()
        if low in _PERSON_WORDS or low[-1:] in "sx" and low[:-1] in HUMAN_NOUNS:
            return True
        if w[:1].isupper() and w in names:
            return True
    return False
