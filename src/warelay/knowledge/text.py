"""Text analysis for knowledge retrieval: language detection, tokens, stopwords and Snowball stems.

Where it sits: ``ingest`` runs :func:`index_text` on every passage it stores (the terms land in
``knowledge_passages.search_text``, which FTS5 / PostgreSQL full-text index as they are), and
``search`` runs :func:`query_groups` on every question. Stemming happens here, in Python, so that
SQLite and PostgreSQL index exactly the same terms.

What a passage is indexed with (the choice, and why):

* every content word gives a *group* of terms: its stem in the passage's own language **plus** its
  English stem when that differs (and, for Indonesian, a few extra forms — see
  :func:`_indonesian_forms`). A question's word matches a passage when any term of its group is in
  the passage.
* Spanish and Indonesian questions are usually short, and short text is where language detection
  fails (the default is English). The English stemmer only trims English endings (-s, -ed, -ing…),
  so on a Spanish or Indonesian word it behaves almost like the surface form. Indexing both stems
  means a misdetected question still matches a passage in its own language on the words they
  share, while a correctly detected one also matches inflected forms (envío/envíos/enviamos,
  kirim/dikirim/pengiriman). English passages are indexed with English stems only, since an
  English question is detected as English (the default) and needs nothing else.
* stopwords of *all* supported languages are dropped on both sides: a function word left in a
  question only because its language was misdetected would otherwise count as a missing term.
* text is casefolded and stripped of accents before stemming, on both sides: people type
  "informacion" as often as "información" (Snowball's Spanish stemmer gives the same stem for both).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Final

import snowballstemmer

LANGUAGES: Final = ("english", "spanish", "indonesian")
DEFAULT_LANGUAGE: Final = "english"

# Unicode letters and digits: str patterns are Unicode-aware, and [^\W_] is \w without the underscore.
_WORD = re.compile(r"[^\W_]+")
# An apostrophe inside a word joins it ("don't" → "dont", "shop's" → "shops") rather than splitting it.
_INNER_APOSTROPHE = re.compile(r"(?<=[^\W\d_])['’ʼ](?=[^\W\d_])")
_SPANISH_CHARS = frozenset("ñ¿¡")
_SPANISH_ACCENTS = frozenset("áéíóúü")

# ------------------------------------------------------------------------------------------ stopwords


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words, question words, greetings and chat fillers: they say nothing about which passage
# answers a question. Written accent-free and casefolded, as tokenize() produces them.

_EN_STOP = _words(
    """
    a about above after again against all also am an and any are aren arent as at be because been
    before being below between both but by can cant could couldnt did didnt do does doesnt doing dont
    down during each either else ever few for from further get gets got had hadnt has hasnt have
    havent having he hed hell her here hers herself hes hey hi him himself his how hows i id if ill im
    in into is isnt it its itself ive just know let lets like may me might mine more most much must
    my myself need no nor not now of off ok okay on once only or other ought our ours ourselves out
    over own please pls plz same shall she shes should shouldnt so some such tell than thank thanks
    thx that thats the their theirs them themselves then there theres these they theyre this those
    through to too u under until up ur us very want was wasnt we were weve what whats when where
    whats which while who whom whos why will with wont would wouldnt yeah yes yet you youd youll
    your youre yours yourself yourselves youve hello hiya dear sir madam guys
    option options possible available anything something thing things way able wanna gonna
    kind sort stuff info question questions ask asking help
    """
)

_ES_STOP = _words(
    """
    a al algo algun alguna algunas alguno algunos ante antes aqui asi aun bien cada como con contra
    cual cuales cualquier cuando cuanta cuantas cuanto cuantos de del desde donde dos e el ella ellas
    ellos en entre era eran eres es esa esas ese eso esos esta estaba estamos estan estar estas este
    esto estos estoy fue fueron ha hace hacen hacer han has hay he hemos hola gracias la las le les
    lo los mas me mi mia mio mis mucho muchos muy nada ni no nos nosotras nosotros nuestra nuestras
    nuestro nuestros o os otra otras otro otros para pero poco por porque puede pueden puedo pues
    que quien quienes se sea ser si sin sobre solo son soy su sus tal tambien te tenemos tener
    tengo ti tiene tienen toda todas todo todos tu tus u un una unas uno unos usted ustedes vosotros
    vuestra vuestro y ya favor quiero quisiera saber necesito buenos buenas tardes noches senor
    senora oye vale opcion opciones posible disponible informacion pregunta preguntar ayuda
    """
)

_ID_STOP = _words(
    """
    ada adakah adalah agak agar aja akan aku anda apa apakah atau bagaimana bahwa bang banget bapak
    beberapa begitu belum berapa bisa bisakah boleh bu buat dan dapat dari dengan di dia dimana
    dong gak ga gan gimana hai halo hanya harus ia ibu ini itu jadi jika juga kak kakak kalau kalo
    kami kamu kan kapan karena kasih ke kenapa ketika kita kok lagi lah mah makasih mana mas masih
    mau mbak mengapa mereka mohon nggak ngga nya oleh pada pak para pun saja sama saya sebagai
    sedang sih siapa silakan sini situ sudah supaya tapi tetapi terima tidak tolong udah untuk
    yaitu yang ya yuk selamat permisi min sis info tanya nanya bantu ingin pengen kepo punya banyak
    cara
    """
)

STOPWORDS: Final = _EN_STOP | _ES_STOP | _ID_STOP

# ------------------------------------------------------------------------------ language detection
# Words typical of each language (accent-free). Many are stopwords; a few are everyday shop words
# ("ongkir", "envio") that pin a short question to its language.

_MARKERS: Final[dict[str, frozenset[str]]] = {
    "english": _words(
        """
        the is are do does you your what how when where which who can could would i my we our of and
        to for with have has it this that there hi hello hey thanks thank please good morning
        afternoon evening much many an in on at be will if or not any about buy open deliver
        delivery shipping ship order get price cost
        """
    ),
    "spanish": _words(
        """
        el la los las de del que y en es son por para con una un como cuando donde cuanto cuanta
        cuantos cuantas cual cuales hola gracias puedo puede pueden tienen tiene hacen hay buenos
        buenas dias tardes noches se su sus mi lo le al pero muy envio envios pedido pedidos precio
        precios tienda horario quiero necesito favor usted ustedes estan esta abren cierran pagar
        pago granos venden quien quienes porque
        """
    ),
    "indonesian": _words(
        """
        yang dan di ke dari ini itu apa apakah bisa tidak gak nggak ga berapa kapan dimana mana
        bagaimana gimana saya aku kami kita anda kamu kak kakak gan halo hai selamat pagi siang sore
        malam terima kasih makasih mau ada sudah udah belum dong ya sih untuk dengan juga atau kirim
        ongkir harga toko buka jam pesan bayar kopi biji boleh tolong mohon mas mbak pak bu aja saja
        sampai hari pesanan pengiriman siapa kenapa mengapa
        """
    ),
}
_ID_SUFFIXES = ("nya", "kan", "lah", "kah")
_ID_PREFIXES = ("meng", "meny", "peng", "peny", "mem", "ber")


def detect_language(text: str, hint: str | None = None) -> str:
    """Guess whether ``text`` is English, Spanish or Indonesian (English when unsure); ``hint`` forces one."""
    if hint is not None:
        if hint not in LANGUAGES:
            raise ValueError(f"unknown language {hint!r}; supported: {', '.join(LANGUAGES)}")
        return hint
    scores = dict.fromkeys(LANGUAGES, 0.0)
    lowered = text.casefold()
    if not _SPANISH_CHARS.isdisjoint(lowered):
        scores["spanish"] += 2.0
    if not _SPANISH_ACCENTS.isdisjoint(lowered):
        scores["spanish"] += 1.0
    for token in tokenize(text):
        for language, markers in _MARKERS.items():
            if token in markers:
                scores[language] += 1.0
        if len(token) >= 6:
            if token.endswith(_ID_SUFFIXES) or token.startswith(_ID_PREFIXES):
                scores["indonesian"] += 0.5
            elif token.endswith(("cion", "mente")):
                scores["spanish"] += 0.5
            elif token.endswith(("ing", "tion", "ness")):
                scores["english"] += 0.5
    best = max(scores.values())
    if best < 1.0:
        return DEFAULT_LANGUAGE
    leaders = [language for language, score in scores.items() if score == best]
    return leaders[0] if len(leaders) == 1 else DEFAULT_LANGUAGE


# ------------------------------------------------------------------------------------ tokens, stems


def fold(text: str) -> str:
    """Casefold and strip accents (``"Información"`` → ``"informacion"``)."""
    folded = text.casefold()
    if folded.isascii():
        return folded
    return "".join(ch for ch in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(ch))


def tokenize(text: str) -> list[str]:
    """Words and numbers of ``text``, casefolded and accent-free, in order."""
    return _WORD.findall(_INNER_APOSTROPHE.sub("", fold(text)))


# Snowball's pure-Python stemmers keep the word being stemmed in the object: one set per thread.
_local = threading.local()


def _stemmer(language: str) -> Any:
    stemmers: dict[str, Any] | None = getattr(_local, "stemmers", None)
    if stemmers is None:
        stemmers = _local.stemmers = {}
    stemmer = stemmers.get(language)
    if stemmer is None:
        if language not in LANGUAGES:
            raise ValueError(f"unknown language {language!r}; supported: {', '.join(LANGUAGES)}")
        stemmer = stemmers[language] = snowballstemmer.stemmer(language)
    return stemmer


@lru_cache(maxsize=200_000)
def stem(word: str, language: str) -> str:
    """The Snowball stem of one (folded) word; cached, since the same words come back all the time."""
    if word.isdigit():
        return word
    result = str(_stemmer(language).stemWord(word))
    return result or word


def _content_tokens(text: str) -> Iterable[str]:
    for token in tokenize(text):
        # Single letters carry no meaning on their own; single digits can ("7 days").
        if token in STOPWORDS or (len(token) == 1 and not token.isdigit()):
            continue
        yield token


def stem_terms(text: str, language: str) -> list[str]:
    """Stems of ``text``'s content words in ``language`` (stopwords of all supported languages dropped)."""
    _stemmer(language)  # validate the language even for text without content words
    return [stem(token, language) for token in _content_tokens(text)]


_NASAL_PREFIXES = (("meng", "k"), ("peng", "k"), ("meny", "s"), ("peny", "s"), ("men", "t"), ("pen", "t"))
_ID_PARTICLES = ("lah", "kah", "pun", "nya", "ku", "mu")


def _indonesian_forms(word: str) -> list[str]:
    """Extra forms for an Indonesian word, covering where Snowball's Indonesian stemmer falls short.

    Snowball drops the nasal prefix without restoring the consonant it swallowed
    (pengiriman → "irim" while kirim → "kirim"; menerima → "erima"), and strips "ke"/"pe" from roots
    that merely start with them (kembali → "mbali", pesanan → "sanan"). So we add the stem of the
    word with the consonant restored, and the word with only its particles and possessive removed.
    """
    forms: list[str] = []
    for prefix, consonant in _NASAL_PREFIXES:
        if word.startswith(prefix) and len(word) > len(prefix) + 2 and word[len(prefix)] in "aeiou":
            forms.append(stem(consonant + word[len(prefix) :], "indonesian"))
            break
    bare = word
    for particle in _ID_PARTICLES:
        if bare.endswith(particle) and len(bare) - len(particle) >= 4:
            bare = bare[: -len(particle)]
            break
    forms.append(bare)
    for suffix in ("kan", "an"):
        if bare.endswith(suffix) and len(bare) - len(suffix) >= 4:
            forms.append(bare[: -len(suffix)])
            break
    return forms


@lru_cache(maxsize=200_000)
def word_terms(word: str, language: str) -> tuple[str, ...]:
    """The index terms of one content word: its stem in ``language``, its English stem, extra forms."""
    terms = [stem(word, language)]
    if language != "english":
        terms.append(stem(word, "english"))
    if language == "indonesian":
        terms.extend(_indonesian_forms(word))
    return tuple(dict.fromkeys(terms))


def term_groups(text: str, language: str) -> list[tuple[str, ...]]:
    """One group of alternative terms per content word of ``text`` (see the module docstring)."""
    _stemmer(language)
    return [word_terms(token, language) for token in _content_tokens(text)]


def index_text(text: str, language: str | None = None) -> tuple[str, str]:
    """The language of ``text`` and the space-joined terms to store in ``search_text``."""
    language = detect_language(text, hint=language)
    terms = [term for group in term_groups(text, language) for term in group]
    return language, " ".join(terms)


def query_groups(text: str, language: str | None = None) -> tuple[str, list[tuple[str, ...]]]:
    """The language of a question and its distinct term groups, in order (empty for stopword-only text)."""
    language = detect_language(text, hint=language)
    groups = list(dict.fromkeys(term_groups(text, language)))
    return language, groups
