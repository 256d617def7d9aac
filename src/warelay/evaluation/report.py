"""The report of a suite run: a table of every verdict, and the pass-rate line."""

from __future__ import annotations

from rich.table import Column, Table
from rich.text import Text

from warelay.evaluation.results import SuiteResult

__all__ = ["summary_line", "verdict_table"]

_RECEIVED_CHARS = 200  # of a turn's replies shown in the table (the JSON output has them whole)


def _short(text: str, limit: int = _RECEIVED_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def verdict_table(result: SuiteResult) -> Table:
    """One row per verdict: conversation, step, what the user sent, assertion, pass/fail, what came back.

    The replies are shown on a step's first row; a failed row adds why it failed, in red.
    """
    table = Table(
        Column("conversation", overflow="fold", max_width=24),
        Column("#", justify="right"),
        Column("user sent", overflow="fold", max_width=30),
        Column("assertion", overflow="fold", max_width=36),
        Column("result"),
        Column("received / why it failed", overflow="fold"),
        title=f"{result.name} ({result.agent_kind} agent)",
    )
    for c, conversation in enumerate(result.conversations):
        if c:
            table.add_section()
        first_of_conversation = True
        for step in conversation.steps:
            rows = step.rows
            if not rows:  # a step without assertions still shows what it sent and got
                table.add_row(
                    conversation.name if first_of_conversation else "",
                    str(step.number),
                    Text(_short(step.sent, 200)),
                    Text("(no assertions)", style="dim"),
                    "",
                    Text(_short(step.received) if step.played else ""),
                )
                first_of_conversation = False
                continue
            for n, outcome in enumerate(rows):
                cell = Text(_short(step.received)) if n == 0 and step.played else Text()
                if not outcome.passed and outcome.detail:
                    if cell:
                        cell.append("\n")
                    cell.append(outcome.detail, style="red")
                table.add_row(
                    conversation.name if first_of_conversation else "",
                    str(step.number) if n == 0 else "",
                    Text(_short(step.sent, 200)) if n == 0 else Text(),
                    Text(outcome.assertion),
                    Text("pass", style="green") if outcome.passed else Text("FAIL", style="bold red"),
                    cell,
                )
                first_of_conversation = False
    return table


def summary_line(result: SuiteResult) -> Text:
    """``pass rate: 100.0% — 24/24 checks passed, 8/8 conversations passed (3.1 s)``, green or red.

    Checks are the assertions, and a ``turn completed`` check for each step that did not complete.
    """
    conversations = len(result.conversations)
    conversations_passed = sum(c.passed for c in result.conversations)
    line = (
        f"pass rate: {result.pass_rate:.1%} — {result.passed}/{result.total} checks passed, "
        f"{conversations_passed}/{conversations} conversations passed ({result.seconds:.1f} s)"
    )
    return Text(line, style="bold green" if result.ok else "bold red")
