"""Knowledge files become passages: chunking rules, encodings, and replace/remove/list on both engines."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.unit.knowledge.helpers import make_agent
from warelay.knowledge.ingest import (
    MAX_PASSAGE_CHARS,
    KnowledgeFileError,
    add_document,
    add_folder,
    chunk_csv,
    chunk_document,
    chunk_markdown,
    count_passages,
    list_documents,
    remove_document,
    split_text,
)
from warelay.numbers import ensure_agent
from warelay.storage.models import KnowledgePassage


async def fts_hits(engine: AsyncEngine, term: str) -> int:
    """How many passages the engine's full-text index finds for one stored term."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = "SELECT count(*) FROM knowledge_fts WHERE knowledge_fts MATCH :q"
            q = f'"{term}"'
        else:
            sql = (
                "SELECT count(*) FROM knowledge_passages "
                "WHERE to_tsvector('simple', search_text) @@ to_tsquery('simple', :q)"
            )
            q = f"'{term}'"
        return int((await conn.execute(text(sql), {"q": q})).scalar_one())


# ------------------------------------------------------------------------------------------- CSV


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("question,answer", ","),
        ("Question,Answer", ","),
        ("Q;A", ";"),
        ("pregunta\trespuesta", "\t"),
        ("Pertanyaan|Jawaban", "|"),
        ("FAQ,Reply", ","),
    ],
)
def test_csv_with_question_and_answer_columns_gives_faq_passages(header: str, delimiter: str) -> None:
    body = f'{header}\nWhen do you open?{delimiter}"At 8:00, every day."\n'
    drafts = chunk_csv(body)
    assert len(drafts) == 1
    assert drafts[0].title == "When do you open?"
    assert drafts[0].answer == "At 8:00, every day."
    assert drafts[0].content == "When do you open?\nAt 8:00, every day."


def test_faq_csv_keeps_quoted_commas_and_newlines_and_skips_rows_without_answer() -> None:
    body = (
        'id,question,answer,category\n1,"Where, exactly?","Jalan Braga 27,\nBandung",visit\n'
        "2,Is there parking?,,visit\n,,,\n3,,Open daily.,hours\n"
    )
    drafts = chunk_csv(body)
    assert [(d.title, d.answer) for d in drafts] == [
        ("Where, exactly?", "Jalan Braga 27,\nBandung"),
        (None, "Open daily."),
    ]
    assert drafts[1].content == "Open daily."


def test_other_csv_rows_become_column_value_lines_never_split() -> None:
    long_notes = "Very long notes. " * 120
    body = f"product,price,notes\nGayo 200 g,Rp 95.000,{long_notes}\nToraja 200 g,,Earthy\n"
    drafts = chunk_csv(body)
    assert len(drafts) == 2
    assert len(drafts[0].content) > MAX_PASSAGE_CHARS
    assert drafts[0].content.startswith("product: Gayo 200 g\nprice: Rp 95.000\nnotes: Very long notes.")
    assert drafts[0].answer is None
    assert drafts[0].title == "Gayo 200 g"
    assert drafts[1].content == "product: Toraja 200 g\nnotes: Earthy"


# -------------------------------------------------------------------------------------- Markdown


def test_markdown_sections_get_their_heading_path_as_title() -> None:
    md = (
        "Intro line.\n\n# Shop\n\nWe sell coffee.\n\n## Hours\n\nOpen at 8.\n\n"
        "### Holidays\n\nClosed on Lebaran.\n\n## **Delivery** [info](https://example.com)\n\nAnywhere.\n\n"
        "# Contact\n\nCall us.\n"
    )
    drafts = chunk_markdown(md)
    assert [(d.title, d.content) for d in drafts] == [
        (None, "Intro line."),
        ("Shop", "We sell coffee."),
        ("Shop > Hours", "Open at 8."),
        ("Shop > Hours > Holidays", "Closed on Lebaran."),
        ("Shop > Delivery info", "Anywhere."),
        ("Contact", "Call us."),
    ]


def test_markdown_heading_marks_inside_code_or_lists_are_body_text() -> None:
    md = "# Brewing\n\n```\n# not a heading\n```\n\n- step\n\n  # nor this\n"
    drafts = chunk_markdown(md)
    assert len(drafts) == 1
    assert drafts[0].title == "Brewing"
    assert "# not a heading" in drafts[0].content
    assert "# nor this" in drafts[0].content


def test_long_section_splits_on_paragraphs_then_sentences_within_the_limit() -> None:
    paragraphs = [f"Paragraph {i} sentence one is here. Sentence two follows it." for i in range(60)]
    drafts = chunk_markdown("# Long\n\n" + "\n\n".join(paragraphs))
    assert len(drafts) > 1
    assert all(d.title == "Long" for d in drafts)
    assert all(len(d.content) <= MAX_PASSAGE_CHARS for d in drafts)
    # Paragraphs are kept whole and in order.
    assert "\n\n".join(d.content for d in drafts) == "\n\n".join(paragraphs)


def test_split_text_cuts_mid_sentence_only_when_a_sentence_is_too_long() -> None:
    sentences = " ".join(f"Sentence number {i} ends here." for i in range(100))
    pieces = split_text(sentences, limit=200)
    assert all(len(p) <= 200 for p in pieces)
    assert all(p.endswith("ends here.") for p in pieces)
    monster = "word " * 100
    pieces = split_text(monster, limit=50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces) == monster.strip()
    assert split_text("x" * 120, limit=50) == ["x" * 50, "x" * 50, "x" * 20]


def test_text_files_are_chunked_like_markdown() -> None:
    drafts = chunk_document("notes.txt", b"Opening hours\n=============\n\nEvery day from 8.\n")
    assert [(d.title, d.content) for d in drafts] == [("Opening hours", "Every day from 8.")]


# ------------------------------------------------------------------------------------ bad input


def test_unsupported_type_is_rejected_clearly() -> None:
    with pytest.raises(KnowledgeFileError, match=r"unsupported file type '\.pdf'.*\.md.*\.csv"):
        chunk_document("menu.pdf", b"%PDF-1.7")
    with pytest.raises(KnowledgeFileError, match="unsupported"):
        chunk_document("README", b"hello")


def test_non_utf8_is_rejected_clearly() -> None:
    with pytest.raises(KnowledgeFileError, match=r"not UTF-8 .*offset 7"):
        chunk_document("faq.csv", "q,a\nCafé,Sí".encode("latin-1"))
    with pytest.raises(KnowledgeFileError, match="binary"):
        chunk_document("faq.txt", b"abc\x00def")


def test_utf8_bom_and_crlf_are_tolerated() -> None:
    drafts = chunk_document("faq.csv", b"\xef\xbb\xbfquestion,answer\r\nHola?,S\xc3\xad\r\n")
    assert [(d.title, d.answer) for d in drafts] == [("Hola?", "Sí")]


def test_file_without_text_is_rejected() -> None:
    with pytest.raises(KnowledgeFileError, match="no text"):
        chunk_document("empty.md", b"\n\n# Title only\n\n")
    with pytest.raises(KnowledgeFileError, match="no text"):
        chunk_document("empty.csv", b"question,answer\n")


# ---------------------------------------------------------------------------------- the database


async def test_add_document_stores_passages_and_document(engine: AsyncEngine) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    data = b'question,answer\nWhen do you open?,At eight.\nDo you deliver?,"Yes, everywhere."\n'
    progress: list[tuple[int, int]] = []
    info = await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name="faq.csv",
        data=data,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert info.passages == 2
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert not info.replaced
    assert info.created_at.tzinfo is not None
    assert progress[0] == (0, 2)
    assert progress[-1] == (2, 2)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(KnowledgePassage)
                .where(KnowledgePassage.document_id == info.id)
                .order_by(KnowledgePassage.ordinal)
            )
        ).all()
    assert [(r.ordinal, r.title, r.answer, r.language) for r in rows] == [
        (0, "When do you open?", "At eight.", "english"),
        (1, "Do you deliver?", "Yes, everywhere.", "english"),
    ]
    assert {(r.tenant_id, r.agent_id) for r in rows} == {(tenant_id, agent_id)}
    assert "open" in rows[0].search_text.split()
    assert await fts_hits(engine, "open") == 1


async def test_re_adding_a_document_replaces_its_passages(engine: AsyncEngine) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    first = await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name="faq.csv",
        data=b"q,a\nDo you sell tea?,No.\nDo you sell cake?,Yes.\nWifi?,Free.\n",
    )
    second = await add_document(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        name="faq.csv",
        data=b"q,a\nDo you sell matcha?,Yes.\n",
    )
    assert second.id == first.id
    assert second.replaced
    assert second.passages == 1
    assert second.sha256 != first.sha256
    assert await count_passages(engine, tenant_id=tenant_id, agent_id=agent_id) == 1
    # The full-text index followed: the old words are gone, the new ones are there.
    assert await fts_hits(engine, "tea") == 0
    assert await fts_hits(engine, "wifi") == 0
    assert await fts_hits(engine, "matcha") == 1
    docs = await list_documents(engine, tenant_id=tenant_id)
    assert [(d.name, d.passages) for d in docs] == [("faq.csv", 1)]


async def test_concurrent_uploads_of_one_file_leave_one_set_of_passages(engine: AsyncEngine) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    uploads = [f"q,a\nQuestion {i}?,Answer {i}.\nOther {i}?,More {i}.\n".encode() for i in range(4)]
    infos = await asyncio.gather(
        *(
            add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.csv", data=data)
            for data in uploads
        )
    )
    assert len({info.id for info in infos}) == 1
    assert await count_passages(engine, tenant_id=tenant_id, agent_id=agent_id) == 2
    [doc] = await list_documents(engine, tenant_id=tenant_id, agent_id=agent_id)
    assert doc.passages == 2
    assert doc.sha256 in {hashlib.sha256(data).hexdigest() for data in uploads}


async def test_a_failed_replacement_leaves_the_old_passages(engine: AsyncEngine) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    await add_document(
        engine, tenant_id=tenant_id, agent_id=agent_id, name="about.md", data=b"# Tea\n\nNo tea.\n"
    )
    with pytest.raises(KnowledgeFileError):
        await add_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="about.md", data=b"\xff\xfe")
    assert await count_passages(engine, tenant_id=tenant_id, agent_id=agent_id) == 1
    assert await fts_hits(engine, "tea") == 1


async def test_remove_document(engine: AsyncEngine) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    await add_document(
        engine, tenant_id=tenant_id, agent_id=agent_id, name="a.md", data=b"# A\n\nAlpha text.\n"
    )
    await add_document(
        engine, tenant_id=tenant_id, agent_id=agent_id, name="b.md", data=b"# B\n\nBeta text.\n"
    )
    assert await remove_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="a.md")
    assert not await remove_document(engine, tenant_id=tenant_id, agent_id=agent_id, name="a.md")
    assert [d.name for d in await list_documents(engine, tenant_id=tenant_id, agent_id=agent_id)] == ["b.md"]
    assert await fts_hits(engine, "alpha") == 0
    assert await fts_hits(engine, "beta") == 1


async def test_documents_are_scoped_by_tenant_and_agent(engine: AsyncEngine) -> None:
    t1, a1 = await make_agent(engine, "one")
    t2, a2 = await make_agent(engine, "two")
    a1b = await ensure_agent(engine, tenant_id=t1, name="second", kind="knowledge")
    for tenant_id, agent_id in ((t1, a1), (t1, a1b), (t2, a2)):
        await add_document(
            engine, tenant_id=tenant_id, agent_id=agent_id, name="faq.md", data=b"# X\n\nSame.\n"
        )
    assert [(d.agent_id, d.name) for d in await list_documents(engine, tenant_id=t1)] == sorted(
        [(a1, "faq.md"), (a1b, "faq.md")]
    )
    assert [d.tenant_id for d in await list_documents(engine, tenant_id=t2)] == [t2]
    # Removing one tenant's document never touches another's with the same name.
    assert not await remove_document(engine, tenant_id=t2, agent_id=a1, name="faq.md")
    assert await remove_document(engine, tenant_id=t2, agent_id=a2, name="faq.md")
    assert len(await list_documents(engine, tenant_id=t1)) == 2
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(KnowledgePassage))).scalar_one() == 2


async def test_cannot_add_knowledge_to_another_tenants_agent(engine: AsyncEngine) -> None:
    t1, _a1 = await make_agent(engine, "one")
    _t2, a2 = await make_agent(engine, "two")
    with pytest.raises(KnowledgeFileError, match="has no agent"):
        await add_document(engine, tenant_id=t1, agent_id=a2, name="faq.md", data=b"# X\n\nY.\n")
    assert await list_documents(engine, tenant_id=t1) == []


async def test_add_folder_adds_every_supported_file(engine: AsyncEngine, tmp_path: Path) -> None:
    tenant_id, agent_id = await make_agent(engine, "shop")
    (tmp_path / "faq.csv").write_text("question,answer\nOpen?,Yes.\n", encoding="utf-8")
    (tmp_path / "about.md").write_text("# About\n\nA shop.\n", encoding="utf-8")
    (tmp_path / "notes.TXT").write_text("Plain notes.\n", encoding="utf-8")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.md").write_text("# Secret\n\nNo.\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.md").write_text("# More\n\nMore text.\n", encoding="utf-8")
    seen: list[str] = []
    docs = await add_folder(
        engine,
        tenant_id=tenant_id,
        agent_id=agent_id,
        folder=tmp_path,
        on_progress=lambda name, done, total: seen.append(name),
    )
    assert [d.name for d in docs] == ["about.md", "faq.csv", "notes.TXT"]
    assert set(seen) == {"about.md", "faq.csv", "notes.TXT"}
    docs = await add_folder(engine, tenant_id=tenant_id, agent_id=agent_id, folder=tmp_path, recursive=True)
    assert [d.name for d in docs] == ["about.md", "faq.csv", "notes.TXT", "sub/more.md"]
    assert all(d.replaced for d in docs[:3])
    with pytest.raises(KnowledgeFileError, match="not a folder"):
        await add_folder(engine, tenant_id=tenant_id, agent_id=agent_id, folder=tmp_path / "faq.csv")


async def test_demo_knowledge_loads(engine: AsyncEngine) -> None:
    import warelay.demo

    tenant_id, agent_id = await make_agent(engine, "demo")
    folder = Path(warelay.demo.__file__).parent / "knowledge"
    docs = await add_folder(engine, tenant_id=tenant_id, agent_id=agent_id, folder=folder)
    by_name = {d.name: d for d in docs}
    assert set(by_name) == {"about.md", "faq.csv"}
    assert by_name["faq.csv"].passages >= 40
    async with engine.connect() as conn:
        languages = dict(
            (
                await conn.execute(
                    select(KnowledgePassage.language, func.count())
                    .where(KnowledgePassage.document_id == by_name["faq.csv"].id)
                    .group_by(KnowledgePassage.language)
                )
            ).all()
        )
    assert languages["english"] >= 25
    assert languages["spanish"] >= 8
    assert languages["indonesian"] >= 8
