"""warelay's exception tree.

::

    WarelayError
    ├── ConfigError                 unsafe or missing settings; raised at start-up, never later
    ├── WebhookRejectedError             a webhook that must not be processed (status code attached)
    ├── DeliveryError               a send or another call to a channel failed
    │   ├── TransientDeliveryError  retry with backoff (network, 5xx, throughput and pair-rate limits)
    │   └── PermanentDeliveryError  do not retry as is (bad parameters, undeliverable, auth)
    └── AgentError                  the agent failed or timed out; the turn is retried, then dead-lettered

Retries look at the class (and ``retry_after``), never at message text.
"""

from __future__ import annotations


class WarelayError(Exception):
    """Base of every error warelay raises on purpose."""


class ConfigError(WarelayError):
    """Settings are missing or unsafe; warelay refuses to start."""


class WebhookRejectedError(WarelayError):
    """A webhook request that is refused before anything is stored."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


class DeliveryError(WarelayError):
    """A call to a channel (send, mark read, media) did not succeed."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        details: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        per_recipient: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
        self.http_status = http_status
        self.retry_after = retry_after
        self.per_recipient = per_recipient

    def as_dict(self) -> dict[str, object]:
        """The error as stored on a message or a failure record."""
        return {
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "http_status": self.http_status,
            "transient": self.transient,
        }


class TransientDeliveryError(DeliveryError):
    """Worth retrying later: the same request may succeed."""

    transient = True


class PermanentDeliveryError(DeliveryError):
    """Retrying the same request will fail again."""

    transient = False


class AgentError(WarelayError):
    """The agent could not produce a reply (error or timeout)."""
