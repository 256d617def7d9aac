"""Language detection, tokens and stems: what passages are indexed with and questions matched by."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from warelay.knowledge.text import (
    LANGUAGES,
    detect_language,
    fold,
    index_text,
    query_groups,
    stem,
    stem_terms,
    term_groups,
    tokenize,
)


def _matches(question: str, passage: str) -> set[str]:
    """The question's words (by their first term) that find a term of the passage's index."""
    _language, indexed = index_text(passage)
    terms = set(indexed.split())
    _language, groups = query_groups(question)
    return {group[0] for group in groups if not terms.isdisjoint(group)}


# ------------------------------------------------------------------------------------------ tokens


def test_tokenize_casefolds_strips_accents_and_keeps_numbers() -> None:
    assert tokenize("Envíos GRATIS a España, 24/7 ¡Ñandú!") == [
        "envios",
        "gratis",
        "a",
        "espana",
        "24",
        "7",
        "nandu",
    ]


def test_tokenize_joins_inner_apostrophes_and_splits_underscores() -> None:
    assert tokenize("Don't worry, the shop's open: snake_case") == [
        "dont",
        "worry",
        "the",
        "shops",
        "open",
        "snake",
        "case",
    ]


def test_tokenize_handles_any_script() -> None:
    assert tokenize("Straße İstanbul 東京 кофе") == ["strasse", "istanbul", "東京", "кофе"]


def test_fold_is_ascii_fast_path_and_unicode_aware() -> None:
    assert fold("Hello") == "hello"
    assert fold("Información Pública") == "informacion publica"


# ---------------------------------------------------------------------------------------- language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What are your opening hours on Sunday?", "english"),
        ("Do you deliver to Bali?", "english"),
        ("¿Cuál es el horario de la tienda?", "spanish"),
        ("Hacen envíos a Madrid", "spanish"),
        ("hola", "spanish"),
        ("buenos días", "spanish"),
        ("Jam berapa toko buka?", "indonesian"),
        ("Apakah bisa kirim ke Surabaya?", "indonesian"),
        ("ongkir ke bandung berapa kak", "indonesian"),
        ("selamat pagi", "indonesian"),
        ("halo", "indonesian"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["", "ok", "V60", "Gayo Kintamani Toraja", "👍", "12345"])
def test_detect_language_defaults_to_english_when_unsure(text: str) -> None:
    assert detect_language(text) == "english"


def test_detect_language_hint_forces_and_is_validated() -> None:
    assert detect_language("What are your opening hours?", hint="indonesian") == "indonesian"
    with pytest.raises(ValueError, match="klingon"):
        detect_language("hello", hint="klingon")


# ------------------------------------------------------------------------------------------- stems


def test_stem_terms_drop_stopwords_and_conflate_inflections() -> None:
    assert stem_terms("What are the delivery times?", "english") == ["deliveri", "time"]
    assert stem_terms("envío", "spanish") == stem_terms("envíos", "spanish")
    assert stem_terms("información", "spanish") == stem_terms("informacion", "spanish")
    assert stem_terms("pembayaran", "indonesian") == stem_terms("membayar", "indonesian") == ["bayar"]


def test_stem_terms_rejects_unknown_language() -> None:
    with pytest.raises(ValueError, match="latin"):
        stem_terms("", "latin")


def test_every_supported_language_has_a_stemmer() -> None:
    for language in LANGUAGES:
        assert stem_terms("coffee beans", language)


def test_spanish_passage_is_indexed_with_spanish_and_english_stems() -> None:
    language, indexed = index_text("Hacemos envíos a toda España.")
    assert language == "spanish"
    terms = indexed.split()
    assert "envi" in terms  # Spanish stem of "envíos"
    assert "envio" in terms  # English stem: what a question misdetected as English produces
    assert "a" not in terms
    assert "toda" not in terms


def test_english_passage_is_indexed_with_english_stems_only() -> None:
    language, indexed = index_text("We deliver roasted coffee beans every Monday.")
    assert language == "english"
    assert indexed.split() == ["deliv", "roast", "coffe", "bean", "everi", "monday"]


def test_indonesian_forms_cover_snowball_gaps() -> None:
    # Snowball stems pengiriman to "irim" and kirim to "kirim"; pesanan to "sanan", pesan to "pesan".
    assert _matches("kapan barang dikirim?", "Pengiriman ke seluruh Indonesia") == {"kirim"}
    assert _matches("cek pesan saya", "Status pesanan bisa dicek di sini") >= {"pesan"}


@pytest.mark.parametrize(
    ("question", "passage", "word"),
    [
        ("Do you ship to Bali?", "We ship anywhere in Indonesia, Bali included.", "ship"),
        ("shipping costs", "Shipping is free over Rp 300.000.", "ship"),
        ("¿hacen envios?", "Hacemos envíos a toda España.", "envi"),
        # Too short to tell: detected as English, still matched through the English stems.
        ("tarjetas credito", "Aceptamos tarjetas de crédito y transferencias.", "tarjeta"),
        ("¿Qué métodos de pago aceptan?", "Aceptamos varios métodos: tarjeta, transferencia.", "metod"),
        ("bisa bayar pakai QRIS?", "Pembayaran bisa lewat QRIS atau transfer.", "bayar"),
        ("ongkir", "Ongkir gratis untuk belanja di atas Rp 300.000.", "ongkir"),
    ],
)
def test_question_matches_passage_in_its_language(question: str, passage: str, word: str) -> None:
    if word == "tarjeta":
        assert detect_language(question) == "english"
    assert word in _matches(question, passage)


def test_stopword_only_question_has_no_terms() -> None:
    assert query_groups("what is the? ¿qué es? apa itu?")[1] == []
    assert term_groups("the and of", "english") == []


def test_query_groups_are_distinct_and_ordered() -> None:
    _language, groups = query_groups("coffee coffee beans coffee")
    assert groups == [("coffe",), ("bean",)]


def test_stemming_is_safe_across_threads() -> None:
    words = [f"delivering{i} shipments{i} informaciones{i}" for i in range(300)]
    expected = [stem_terms(w, "english") for w in words]
    stem.cache_clear()
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(lambda w: stem_terms(w, "english"), words)) == expected
