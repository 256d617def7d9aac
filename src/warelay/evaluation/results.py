"""Results of a suite run: per conversation, per step, per assertion; counted, and as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warelay.evaluation.checks import Outcome, Reply, received

__all__ = ["ConversationResult", "StepResult", "SuiteResult"]

# The name of the row that reports a step which did not run to the end (not sent, no turn, timeout).
TURN = "turn completed"


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step: what the user sent, what came back, and the verdicts.

    ``error`` is set when the step did not run to the end (the message was not accepted, the turn
    timed out, a tap found no such button); it is reported as a failed ``turn completed`` row, and
    the step's own assertions as failed too. ``warnings`` are problems of a finished turn (work that
    was dead-lettered), reported as a failed row as well.
    """

    number: int
    sent: str
    replies: tuple[Reply, ...] = ()
    outcomes: tuple[Outcome, ...] = ()
    error: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    played: bool = True  # False: not run, because an earlier step of the conversation did not complete

    @property
    def rows(self) -> tuple[Outcome, ...]:
        """The verdicts to report: a failed ``turn completed`` row first when the turn went wrong."""
        problems = ([self.error] if self.error else []) + list(self.warnings)
        head = (Outcome(TURN, False, "; ".join(problems)),) if problems else ()
        return head + self.outcomes

    @property
    def passed(self) -> bool:
        """Whether every row passed."""
        return all(o.passed for o in self.rows)

    @property
    def received(self) -> str:
        """The replies in a few lines."""
        return received(self.replies)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "step": self.number,
            "sent": self.sent,
            "played": self.played,
            "passed": self.passed,
            "error": self.error,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
            "replies": [dict(r.body) for r in self.replies],
            "assertions": [
                {"assertion": o.assertion, "passed": o.passed, "detail": o.detail} for o in self.rows
            ],
        }


@dataclass(frozen=True, slots=True)
class ConversationResult:
    """One conversation: its user, and its steps (those after a step that did not finish are not run)."""

    name: str
    user: str
    steps: tuple[StepResult, ...]

    @property
    def rows(self) -> tuple[Outcome, ...]:
        """Every verdict of the conversation."""
        return tuple(o for s in self.steps for o in s.rows)

    @property
    def passed(self) -> bool:
        """Whether every step passed."""
        return all(s.passed for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "name": self.name,
            "user": self.user,
            "passed": self.passed,
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass(frozen=True, slots=True)
class SuiteResult:
    """A whole run: the pass rate counts assertions (and turns that did not complete)."""

    name: str
    agent_kind: str
    conversations: tuple[ConversationResult, ...]
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Verdicts made."""
        return sum(len(c.rows) for c in self.conversations)

    @property
    def passed(self) -> int:
        """Verdicts that passed."""
        return sum(o.passed for c in self.conversations for o in c.rows)

    @property
    def failed(self) -> int:
        """Verdicts that failed."""
        return self.total - self.passed

    @property
    def pass_rate(self) -> float:
        """Passed verdicts over all of them (1.0 for a run without any)."""
        return self.passed / self.total if self.total else 1.0

    @property
    def ok(self) -> bool:
        """Whether everything passed."""
        return self.failed == 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of the whole run."""
        return {
            "suite": self.name,
            "agent": self.agent_kind,
            "passed": self.passed,
            "failed": self.failed,
            "total": self.total,
            "pass_rate": round(self.pass_rate, 4),
            "conversations_passed": sum(c.passed for c in self.conversations),
            "conversations": [c.to_json() for c in self.conversations],
            "seconds": round(self.seconds, 3),
        }
