"""Turning raw benchmark observations into figures: latencies, throughput and correctness.

Where it sits: after a run. The load generator reports when each webhook was sent and acknowledged;
the simulator (playing Meta's Graph API) reports every reply warelay sent, with the time it arrived and
the ``context.message_id`` warelay threads to the inbound wamid. Matching the two gives end-to-end
latency, and the per-user order of replies shows lost, duplicated and out-of-order answers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/max/mean of ``values`` (nearest-rank percentiles), rounded to 0.01."""
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {
        "count": len(ordered),
        "p50": round(rank(50), 2),
        "p90": round(rank(90), 2),
        "p99": round(rank(99), 2),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / len(ordered), 2),
    }


@dataclass(frozen=True, slots=True)
class Reply:
    """An outbound message the simulator accepted from warelay."""

    at: float
    context_id: str | None
    text: str | None


def replies_from_chat(view: Mapping[str, Any]) -> list[Reply]:
    """warelay's messages in a ``GET /_sim/users/{wa_id}/chat`` view, in the order Graph accepted them."""
    out: list[Reply] = []
    for entry in sorted(view.get("messages", []), key=lambda e: e["seq"]):
        if entry.get("direction") != "out":
            continue
        message = entry.get("message") or {}
        context = message.get("context") or {}
        text = (message.get("text") or {}).get("body") if isinstance(message.get("text"), dict) else None
        out.append(Reply(float(entry["at"]), context.get("message_id"), text))
    return out


def analyse_phase(
    rows: Sequence[Sequence[Any]],
    replies: Mapping[int, Sequence[Reply]],
    *,
    fallback_text: str,
    expected_text: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Figures of one load phase.

    ``rows`` are the load generator's deliveries (user, seq, wamid, dup, sent_wall, ack_ms, status,
    attempts, error, text); ``replies`` maps a user index to the replies the simulator got for that
    user; ``expected_text`` (wamid → text), when given, is what each reply must say.
    """
    first_sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    by_user: dict[int, dict[int, str]] = defaultdict(dict)
    statuses: dict[str, int] = defaultdict(int)
    errors: list[str] = []
    acks: list[float] = []
    retried = 0
    for user, seq, wamid, _dup, sent_wall, ack_ms, status, attempts, error, _text in rows:
        first_sent[wamid] = min(first_sent.get(wamid, math.inf), float(sent_wall))
        by_user[int(user)][int(seq)] = wamid
        statuses[str(status)] += 1
        if status == 200:
            acks.append(float(ack_ms))
            # Both load modes measure ack_ms from sent_wall (the actual or the scheduled send time).
            acked[wamid] = min(acked.get(wamid, math.inf), float(sent_wall) + float(ack_ms) / 1000.0)
        elif error and len(errors) < 5:
            errors.append(str(error))
        if int(attempts) > 1:
            retried += 1
    seq_of = {wamid: seq for seqs in by_user.values() for seq, wamid in seqs.items()}

    reply_times: dict[str, list[float]] = defaultdict(list)
    unmatched = fallback = mismatched = 0
    out_of_order = reordered_unacked = 0
    users_out_of_order = 0
    for user, seqs in by_user.items():
        disordered = False
        answered_first: list[str] = []
        for reply in replies.get(user, ()):
            wamid = reply.context_id
            if wamid is None or wamid not in seq_of or seqs.get(seq_of[wamid]) != wamid:
                unmatched += 1
                continue
            reply_times[wamid].append(reply.at)
            if reply.text == fallback_text:
                fallback += 1
            elif expected_text is not None and reply.text != expected_text.get(wamid):
                mismatched += 1
            if len(reply_times[wamid]) > 1:
                continue
            # Answered after a message the user wrote later: a real inversion when that later message
            # was sent only once this one had been acknowledged (so warelay knew the order); otherwise
            # the two were in flight together and neither order is wrong.
            later = [w for w in answered_first if seq_of[w] > seq_of[wamid]]
            if any(first_sent[w] >= acked.get(wamid, math.inf) for w in later):
                out_of_order += 1
                disordered = True
            elif later:
                reordered_unacked += 1
            answered_first.append(wamid)
        users_out_of_order += disordered

    messages = len(first_sent)
    answered = [w for w in first_sent if reply_times.get(w)]
    e2e = [(min(reply_times[w]) - first_sent[w]) * 1000.0 for w in answered]
    started = min(first_sent.values()) if first_sent else 0.0
    last_reply = max((max(reply_times[w]) for w in answered), default=started)
    span = last_reply - started
    return {
        "messages": messages,
        "deliveries": len(rows),
        "redeliveries": len(rows) - messages,
        "ack_status": dict(sorted(statuses.items())),
        "ack_errors_sample": errors,
        "deliveries_retried_on_connection_error": retried,
        "ack_latency_ms": percentiles(acks),
        "answered": len(answered),
        "e2e_latency_ms": percentiles(e2e),
        "first_send_to_last_reply_s": round(span, 3),
        "e2e_throughput_msg_per_s": round(len(answered) / span, 1) if span > 0 else None,
        "correctness": {
            "lost": messages - len(answered),
            "duplicated": sum(1 for w in answered if len(reply_times[w]) > 1),
            "extra_replies": sum(len(reply_times[w]) - 1 for w in answered),
            "out_of_order": out_of_order,
            "users_out_of_order": users_out_of_order,
            "reordered_while_both_in_flight": reordered_unacked,
            "unmatched_replies": unmatched,
            "fallback_replies": fallback,
            "mismatched_replies": mismatched if expected_text is not None else None,
        },
    }
