"""Markdown → WhatsApp markup, the first step of the outbound stage.

Where it sits in the path::

    agent reply (LLM Markdown) ──▶ markdown_to_whatsapp ──▶ split_text (4096) ──▶ rate limit ──▶ send

WhatsApp renders its own small markup: ``*bold*``, ``_italic_``, ``~strike~``, `` `code` ``,
```` ```monospace``` ````, ``- `` / ``1. `` lists and ``> `` quotes. LLMs write CommonMark, where ``*x*``
means *italic* and ``**x**`` bold. The two overlap, so a text is only rewritten when it shows Markdown that
WhatsApp does not speak (``**strong**``, ``__strong__``, ``~~strike~~``, ``#`` headings, ``[links](…)``,
images, tables, fences with a language, ``+`` bullets). Anything else (plain text, or text already written
in WhatsApp markup such as ``*bold*``, ``2*3*4`` or ``snake_case_names``) is returned exactly as given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Final

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

__all__ = ["markdown_to_whatsapp"]

logger = logging.getLogger("warelay.outbound.format")

# Built once: a parser configuration, not settings. HTML is off so ``<b>`` and ``a < b`` stay literal text,
# and typographer is off so quotes and dashes are never rewritten.
_MD: Final = MarkdownIt("commonmark", {"html": False, "typographer": False})
_MD.enable(["strikethrough", "table"])

# Every Markdown-only construct needs one of these characters; text without any of them skips the parser.
_MAYBE_MARKDOWN: Final = re.compile(r"[*_~#=\[|`+]")

_BULLET: Final = "- "
_RULE: Final = "──────────"


def markdown_to_whatsapp(text: str) -> str:
    """Convert LLM-style Markdown to WhatsApp markup; text without Markdown-only syntax is returned as is."""
    try:
        if not _MAYBE_MARKDOWN.search(text):
            return text
        renderer = _Renderer()
        out = renderer.render(SyntaxTreeNode(_MD.parse(text)))
        return out if renderer.saw_markdown else text
    except Exception as exc:  # formatting must never cost a reply: fall back to the text as written
        logger.warning("markdown conversion failed, sending text unchanged: %s", type(exc).__name__)
        return text


class _Renderer:
    """Walks markdown-it's syntax tree once and writes WhatsApp markup."""

    __slots__ = ("saw_markdown",)

    def __init__(self) -> None:
        self.saw_markdown = False

    def render(self, root: SyntaxTreeNode) -> str:
        """Render a whole document: blocks separated by one blank line."""
        return self._blocks(root.children, "\n\n").strip("\n")

    # ------------------------------------------------------------------------------------------- blocks

    def _blocks(self, nodes: Sequence[SyntaxTreeNode], sep: str) -> str:
        parts = (self._block(node) for node in nodes)
        return sep.join(part for part in parts if part)

    def _block(self, node: SyntaxTreeNode) -> str:
        kind = node.type
        if kind == "paragraph":
            return self._inline_of(node)
        if kind == "heading":
            if node.markup[:1] in ("#", "="):
                self.saw_markdown = True
            title = self._inline_of(node, in_bold=True).strip()
            return f"*{title}*" if title else ""
        if kind == "bullet_list" or kind == "ordered_list":
            return self._list(node)
        if kind == "blockquote":
            body = self._blocks(node.children, "\n\n")
            return "\n".join(f"> {line}" if line else ">" for line in body.split("\n"))
        if kind == "fence":
            if node.info.strip() or node.markup.startswith("~"):
                self.saw_markdown = True
            return _code_block(node.content)
        if kind == "code_block":
            return _code_block(node.content)
        if kind == "hr":
            return _RULE
        if kind == "table":
            self.saw_markdown = True
            return self._table(node)
        if kind == "inline":
            return self._inline(node.children, in_bold=False)
        # html_block cannot occur (HTML is off); anything new to us keeps its nested text.
        return self._blocks(node.children, "\n") if node.children else node.content

    def _list(self, node: SyntaxTreeNode) -> str:
        ordered = node.type == "ordered_list"
        if node.markup == "+":
            self.saw_markdown = True
        start = _int_attr(node, "start", 1) if ordered else 1
        lines: list[str] = []
        for index, item in enumerate(node.children):
            marker = f"{start + index}. " if ordered else _BULLET
            indent = " " * len(marker)
            body = self._blocks(item.children, "\n")
            first, *rest = body.split("\n")
            lines.append(marker + first if first else marker.rstrip())
            lines.extend(indent + line if line else line for line in rest)
        return "\n".join(lines)

    def _table(self, node: SyntaxTreeNode) -> str:
        lines: list[str] = []
        for section in node.children:
            header = section.type == "thead"
            for row in section.children:
                cells = [self._inline_of(cell).strip() for cell in row.children]
                if header:
                    cells = [f"*{cell}*" if cell else cell for cell in cells]
                if any(cells):
                    lines.append(" | ".join(cells))
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------- inline

    def _inline_of(self, node: SyntaxTreeNode, *, in_bold: bool = False) -> str:
        out: list[str] = []
        for child in node.children:
            if child.type == "inline":
                out.append(self._inline(child.children, in_bold=in_bold))
        return "".join(out)

    def _inline(self, nodes: Sequence[SyntaxTreeNode], *, in_bold: bool) -> str:
        out: list[str] = []
        for index, node in enumerate(nodes):
            kind = node.type
            if kind == "text":
                out.append(node.content)
            elif kind == "softbreak" or kind == "hardbreak":
                out.append("\n")
            elif kind == "strong":
                self.saw_markdown = True
                inner = self._inline(node.children, in_bold=True)
                out.append(inner if in_bold else f"*{inner}*")
            elif kind == "em":
                inner = self._inline(node.children, in_bold=in_bold)
                marker = "_"
                # CommonMark lets `*` emphasise inside a word ("2*3*4"); WhatsApp would not, and the
                # author almost surely meant the asterisks literally, so they stay as written.
                if node.markup == "*" and _last_char_is_word(out) and _next_starts_word(nodes, index):
                    marker = "*"
                out.append(f"{marker}{inner}{marker}")
            elif kind == "s":
                self.saw_markdown = True
                out.append(f"~{self._inline(node.children, in_bold=in_bold)}~")
            elif kind == "code_inline":
                fence = "```" if len(node.markup) >= 3 else "`"
                out.append(f"{fence}{node.content}{fence}")
            elif kind == "link":
                out.append(self._link(node, in_bold=in_bold))
            elif kind == "image":
                self.saw_markdown = True
                alt = self._inline(node.children, in_bold=in_bold).strip()
                src = _display_url(_str_attr(node, "src"))
                out.append(f"{alt} ({src})" if alt and src else alt or src)
            else:
                out.append(self._inline(node.children, in_bold=in_bold) if node.children else node.content)
        return "".join(out)

    def _link(self, node: SyntaxTreeNode, *, in_bold: bool) -> str:
        label = self._inline(node.children, in_bold=in_bold)
        if node.markup == "autolink":
            return label
        self.saw_markdown = True
        url = _display_url(_str_attr(node, "href"))
        plain = label.strip()
        if not url or url.startswith("#"):
            return label  # an in-page anchor means nothing in a chat
        if not plain or _same_target(plain, url):
            return url
        return f"{label} ({url})"


def _code_block(content: str) -> str:
    body = content if content.endswith("\n") or not content else content + "\n"
    return f"```\n{body}```"


def _last_char_is_word(out: list[str]) -> bool:
    for piece in reversed(out):
        if piece:
            return piece[-1].isalnum()
    return False


def _next_starts_word(nodes: Sequence[SyntaxTreeNode], index: int) -> bool:
    if index + 1 >= len(nodes):
        return False
    following = nodes[index + 1]
    return following.type == "text" and following.content[:1].isalnum()


def _display_url(url: str) -> str:
    # markdown-it percent-encodes hrefs; show them as the author wrote them (non-ASCII kept readable).
    shown = _MD.normalizeLinkText(url) if url else ""
    return shown.removeprefix("mailto:")


def _same_target(label: str, url: str) -> bool:
    def bare(value: str) -> str:
        for prefix in ("https://", "http://", "mailto:"):
            value = value.removeprefix(prefix)
        return value.removeprefix("www.").rstrip("/")

    return label == url or bare(label) == bare(url)


def _str_attr(node: SyntaxTreeNode, name: str) -> str:
    value = node.attrs.get(name)
    return value if isinstance(value, str) else ""


def _int_attr(node: SyntaxTreeNode, name: str, default: int) -> int:
    value = node.attrs.get(name)
    return value if isinstance(value, int) else default
