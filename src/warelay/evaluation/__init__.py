"""``warelay eval``: scripted conversations through a real agent configuration, checked reply by reply.

A suite file (YAML) names the agent and the conversations; :func:`load_suite` validates it (every
problem reported with its line), :func:`run_suite` plays it against warelay and the WhatsApp
simulator on loopback, and the result is a table, a pass rate and, on request, JSON::

    name: Kopi Nusantara FAQ
    agent:
      kind: knowledge                # or llm (endpoint from WARELAY_LLM__*), or any registered kind
      knowledge: [knowledge]         # files and folders, relative to this file
      config: {min_confidence: 0.5}  # the agent's configuration, as stored for an agent
    ignore_case: false               # default for contains / not_contains / regex / button
    timeout_seconds: 60              # per step, unless the step says otherwise
    conversations:
      - name: opening hours
        steps:
          - user: What are your opening hours?
            expect:
              - contains: ["8:00", "20:00"]
              - not_contains: don't know
              - regex: 'Saturday.*9:00'
      - name: order
        steps:
          - user: I'd like to order
            expect:
              - button: Gayo
              - state: {intent: order, context: {channel: whatsapp}}
          - tap: Gayo                # a reply button or list row offered earlier, by title or id
            expect: [{handoff: false}]
          - media: {file: photo.jpg, caption: this one arrived broken}
            expect: [{handoff: true}]

A step sends one of ``user`` (text), ``media`` (image, document, audio, video or sticker from a
file), ``tap`` or ``message`` (a raw Cloud API message object). Assertions: ``contains`` and
``not_contains`` (a text or a list; every one must be there / none may be), ``regex`` (Python,
searched), ``button`` (a reply button or list row title), ``state`` (intent, step and/or context
of the conversation after the turn; context as a subset) and ``handoff`` (true/false). The text
searched is everything the user would read in the turn's replies: text bodies, captions, document
names, interactive headers, bodies and footers, button titles and list rows.
"""

from __future__ import annotations

from warelay.evaluation.report import summary_line, verdict_table
from warelay.evaluation.results import ConversationResult, StepResult, SuiteResult
from warelay.evaluation.runner import EVAL_TENANT, EvalRunError, EvalSetupError, run_suite
from warelay.evaluation.suite import Suite, SuiteError, load_suite

__all__ = [
    "EVAL_TENANT",
    "ConversationResult",
    "EvalRunError",
    "EvalSetupError",
    "StepResult",
    "Suite",
    "SuiteError",
    "SuiteResult",
    "load_suite",
    "run_suite",
    "summary_line",
    "verdict_table",
]
