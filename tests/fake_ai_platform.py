"""A loopback AI platform for seed 000's OAuth 2.0 + PKCE flow: Authlib's authorization server on Flask.

It serves ``/integration-request`` (authorization: the user "logs in and consents" at once, or
refuses when ``deny_next`` is set), ``/integration-token`` (authorization code with PKCE S256 required
for public clients, and refresh tokens, rotated on use) and ``/integration-revoke`` (RFC 7009), on a
werkzeug server in a thread on 127.0.0.1. Every request is recorded, so tests can hold warelay's
requests to the seed's exact form. The server side is Authlib's own (``AuthorizationServer``,
``AuthorizationCodeGrant`` with ``CodeChallenge(required=True)``, ``RefreshTokenGrant``,
``RevocationEndpoint``); only the storage is in memory here.

Authlib's server refuses plain HTTP unless ``AUTHLIB_INSECURE_TRANSPORT`` is set: tests set it for
the duration of the test (loopback only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, make_server

CLIENT_ID = "warelay-test-client"
CLIENT_SECRET = "test-client-secret-0123456789"
USER = {"id": 1, "name": "platform user"}
AUTH_METHODS = ["none", "client_secret_post", "client_secret_basic"]


@dataclass(frozen=True)
class Recorded:
    """One request the platform received."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    authorization: str | None
    content_type: str | None


@dataclass
class _Client(ClientMixin):  # type: ignore[misc]  # Authlib ships no types
    client_id: str
    client_secret: str | None
    auth_method: str
    redirect_uris: list[str]
    # Without "refresh_token" Authlib issues no refresh tokens and refuses refresh requests.
    grant_types: tuple[str, ...]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s == "messaging")

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and client_secret == self.client_secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class _Code(AuthorizationCodeMixin):  # type: ignore[misc]  # Authlib ships no types
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.time() - self.issued_at > 300


@dataclass
class _Token(TokenMixin):  # type: ignore[misc]  # Authlib ships no types
    client_id: str
    access_token: str
    refresh_token: str | None
    scope: str
    expires_in: int
    issued_at: float = field(default_factory=time.time)
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: _Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() > self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.refresh_revoked

    def get_user(self) -> dict[str, Any]:
        return USER

    def get_client(self) -> None:
        return None


class FakeAIPlatform:
    """The platform's authorization server, with knobs for the failure cases tests need."""

    def __init__(
        self,
        *,
        client_secret: str | None = None,
        auth_method: str = "none",
        expires_in: int = 3600,
        refresh_tokens: bool = True,
    ) -> None:
        granted = ("authorization_code", "refresh_token") if refresh_tokens else ("authorization_code",)
        self.client = _Client(CLIENT_ID, client_secret, auth_method, [], granted)
        self.expires_in = expires_in
        self.requests: list[Recorded] = []
        self.tokens: dict[str, _Token] = {}
        self.codes: dict[str, _Code] = {}
        # The next authorization is refused by the "user" (error=access_denied).
        self.deny_next = False
        # The next this-many token requests get a 503.
        self.fail_token_requests = 0
        # Seconds each token request takes (to make concurrent refreshes overlap).
        self.token_delay = 0.0
        # Set when a token request arrives (before its delay).
        self.token_request_arrived = threading.Event()
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    # ---------------------------------------------------------------- what tests look at

    @property
    def url(self) -> str:
        """The platform's base URL (AI_BASE_URL)."""
        assert self._server is not None, "the platform is not running"
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def revocation_url(self) -> str:
        """The RFC 7009 endpoint."""
        return f"{self.url}/integration-revoke"

    def allow_redirect(self, redirect_uri: str) -> None:
        """Register a redirect URI for the client (warelay's callback)."""
        self.client.redirect_uris.append(redirect_uri)

    def recorded(self, path: str) -> list[Recorded]:
        """The requests received on ``path``, in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def token_requests(self, grant_type: str | None = None) -> list[Recorded]:
        """Requests to the token endpoint (of one grant type)."""
        found = self.recorded("/integration-token")
        return [r for r in found if grant_type is None or r.form.get("grant_type") == grant_type]

    def is_active(self, access_token: str) -> bool:
        """Whether the platform would accept this access token now."""
        with self._lock:
            token = self.tokens.get(access_token)
        return token is not None and not token.access_revoked and not token.is_expired()

    def refresh_token_of(self, access_token: str) -> str | None:
        """The refresh token issued with an access token."""
        with self._lock:
            token = self.tokens.get(access_token)
        return None if token is None else token.refresh_token

    def refresh_token_active(self, refresh_token: str) -> bool:
        """Whether a refresh token would be accepted now."""
        with self._lock:
            return any(
                t.refresh_token == refresh_token and not t.refresh_revoked for t in self.tokens.values()
            )

    def revoke_all(self) -> None:
        """The platform forgets every grant (as after the user removed warelay's access there)."""
        with self._lock:
            for token in self.tokens.values():
                token.access_revoked = token.refresh_revoked = True

    # ------------------------------------------------------------------------ the server

    def _build_app(self) -> Flask:
        app = Flask("fake_ai_platform")
        platform = self

        def query_client(client_id: str) -> _Client | None:
            return platform.client if client_id == platform.client.client_id else None

        def save_token(token: dict[str, Any], req: Any) -> None:
            with platform._lock:
                platform.tokens[token["access_token"]] = _Token(
                    client_id=req.client.client_id,
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token"),
                    scope=token.get("scope", ""),
                    expires_in=int(token["expires_in"]),
                )

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]  # Authlib ships no types
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

            def save_authorization_code(self, code: str, req: Any) -> None:
                with platform._lock:
                    platform.codes[code] = _Code(
                        code=code,
                        client_id=req.client.client_id,
                        redirect_uri=req.payload.redirect_uri,
                        scope=req.payload.scope,
                        code_challenge=req.payload.data.get("code_challenge"),
                        code_challenge_method=req.payload.data.get("code_challenge_method"),
                    )

            def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
                with platform._lock:
                    found = platform.codes.get(code)
                if found is None or found.client_id != client.client_id or found.is_expired():
                    return None
                return found

            def delete_authorization_code(self, authorization_code: _Code) -> None:
                with platform._lock:
                    platform.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: _Code) -> dict[str, Any]:
                return USER

        class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]  # Authlib ships no types
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
            INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: each refresh token works once

            def authenticate_refresh_token(self, refresh_token: str) -> _Token | None:
                with platform._lock:
                    for token in platform.tokens.values():
                        if token.refresh_token == refresh_token and not token.refresh_revoked:
                            return token
                return None

            def authenticate_user(self, credential: _Token) -> dict[str, Any]:
                return USER

            def revoke_old_credential(self, credential: _Token) -> None:
                with platform._lock:
                    credential.refresh_revoked = True

        class Revocation(RevocationEndpoint):  # type: ignore[misc]  # Authlib ships no types
            CLIENT_AUTH_METHODS = AUTH_METHODS

            def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
                with platform._lock:
                    for token in platform.tokens.values():
                        if token_string in (token.access_token, token.refresh_token):
                            return token
                return None

            def revoke_token(self, token: _Token, req: Any) -> None:
                with platform._lock:
                    token.access_revoked = token.refresh_revoked = True

        def expires_in(client: Any, grant_type: str) -> int:
            return platform.expires_in

        server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
        server.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda *_, **__: generate_token(42),
                refresh_token_generator=lambda *_, **__: generate_token(48),
                expires_generator=expires_in,
            ),
        )
        server.register_grant(CodeGrant, [CodeChallenge(required=True)])
        server.register_grant(RefreshGrant)
        server.register_endpoint(Revocation)

        @app.before_request
        def record() -> None:
            with platform._lock:
                platform.requests.append(
                    Recorded(
                        method=request.method,
                        path=request.path,
                        query=dict(request.args.items()),
                        form=dict(request.form.items()),
                        authorization=request.headers.get("Authorization"),
                        content_type=request.headers.get("Content-Type"),
                    )
                )

        @app.get("/integration-request")
        def authorize() -> Response:
            with platform._lock:
                deny, platform.deny_next = platform.deny_next, False
            try:
                grant = server.get_consent_grant(end_user=USER)
            except OAuth2Error as error:
                refused: Response = server.handle_error_response(None, error)
                return refused
            response: Response = server.create_authorization_response(
                grant=grant, grant_user=None if deny else USER
            )
            return response

        @app.post("/integration-token")
        def token() -> Response:
            with platform._lock:
                failing = platform.fail_token_requests > 0
                platform.fail_token_requests -= int(failing)
            platform.token_request_arrived.set()
            if platform.token_delay:
                time.sleep(platform.token_delay)
            if failing:
                return Response("upstream unavailable", status=503)
            response: Response = server.create_token_response()
            return response

        @app.post("/integration-revoke")
        def revoke() -> Response:
            response: Response = server.create_endpoint_response("revocation")
            return response

        return app

    def start(self) -> None:
        """Serve on a free loopback port in a thread."""
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-ai-platform", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextmanager
def running_platform(**options: Any) -> Iterator[FakeAIPlatform]:
    """A started :class:`FakeAIPlatform`, stopped afterwards."""
    platform = FakeAIPlatform(**options)
    platform.start()
    try:
        yield platform
    finally:
        platform.stop()
