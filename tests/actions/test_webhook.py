"""The webhook against hostile endpoints, each a real server on loopback: one that redirects,
one that trickles its answer a byte at a time, one that resets every connection, one that
trickles a TLS handshake; and what a receiver gets (headers, token, the body's version)."""

from __future__ import annotations

import json
import time

import pytest

from oomhero.actions.webhook import BODY_VERSION, Webhook
from oomhero.cli import build_parser
from oomhero.commands.common import parse_outputs
from oomhero.config import read_token_file
from tests.helpers import wait_until
from tests.hostile_network import RawServer, Recorder, garbage, reset, trickle, trickle_tls


def records(json_log) -> list[dict]:
    return [json.loads(line) for line in json_log.getvalue().splitlines()]


def deliver(webhook: Webhook, body: dict | None = None) -> None:
    webhook.queue.put(json.dumps(body or {"version": BODY_VERSION}).encode())


def deliver_once(url: str, server, timeout: float, retries: int) -> Webhook:
    """One body to ``url``, waited for until delivered or given up; then the webhook is closed
    and ``server`` stopped."""
    webhook = Webhook(url, timeout=timeout, retries=retries)
    try:
        deliver(webhook)
        wait_until(lambda: webhook.delivered + webhook.failed >= 1, "the delivery", timeout=30)
    finally:
        webhook.close()
        server.stop()
    return webhook


def test_a_redirect_is_a_failed_delivery_not_a_get_to_another_host(json_log):
    elsewhere = Recorder()
    for location in (elsewhere.url, "ftp://127.0.0.1/x"):
        redirecting = Recorder(302, {"Location": location})
        webhook = deliver_once(redirecting.url, redirecting, timeout=2, retries=3)
        assert (webhook.delivered, webhook.failed) == (0, 1)
        assert len(redirecting.requests) == 1, "a redirect is not retried"
        assert redirecting.requests[0]["method"] == "POST"
    elsewhere.stop()
    assert elsewhere.requests == [], "the redirect was followed"
    failures = [r for r in records(json_log) if r["msg"] == "webhook delivery failed"]
    assert len(failures) == 2
    for failure in failures:
        assert failure["status"] == 302 and failure["attempts"] == 1
        assert "redirects are not followed" in failure["why"]


@pytest.mark.parametrize("behave", [trickle, trickle_tls], ids=["http", "tls-handshake"])
def test_a_trickling_server_cannot_stretch_an_attempt_past_the_timeout(json_log, behave):
    server = RawServer(behave)
    scheme = "https" if behave is trickle_tls else "http"
    started = time.monotonic()
    webhook = deliver_once(f"{scheme}://127.0.0.1:{server.port}/hook", server, 1, retries=1)
    took = time.monotonic() - started
    assert webhook.failed == 1
    # Two attempts of at most 1 s each and a 0.5 s backoff; a busy machine gets a second more.
    assert took < 2 * 1 + 0.5 + 1.0, took
    (failure,) = [r for r in records(json_log) if r["msg"] == "webhook delivery failed"]
    assert failure["attempts"] == 2 and failure["why"] == "no complete answer within 1s"


def test_a_resetting_server_is_retried_then_given_up_with_one_line(json_log):
    server = RawServer(reset)
    deliver_once(f"http://127.0.0.1:{server.port}/hook", server, timeout=2, retries=2)
    assert server.accepted == 3
    (failure,) = [r for r in records(json_log) if r["msg"] == "webhook delivery failed"]
    assert failure["attempts"] == 3 and failure["status"] is None
    assert "reset" in failure["why"].lower() or "closed" in failure["why"].lower(), failure


def test_a_garbage_answer_is_a_bounded_line_in_the_log(json_log):
    server = RawServer(garbage)
    deliver_once(f"http://127.0.0.1:{server.port}/hook", server, timeout=2, retries=0)
    (failure,) = [r for r in records(json_log) if r["msg"] == "webhook delivery failed"]
    assert failure["attempts"] == 1 and len(failure["why"]) <= 200


@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (404, 1), (429, 2), (503, 2)])
def test_client_errors_are_not_retried_overload_and_server_errors_are(json_log, status, attempts):
    server = Recorder(status)
    deliver_once(server.url, server, timeout=2, retries=1)
    assert len(server.requests) == attempts
    (failure,) = [r for r in records(json_log) if r["msg"] == "webhook delivery failed"]
    assert (failure["status"], failure["attempts"]) == (status, attempts)


def test_headers_a_rotated_token_file_and_the_body_version_reach_the_receiver(tmp_path):
    server = Recorder()
    token = tmp_path / "token"
    token.write_text("first-token\n")  # as `kubectl create secret --from-file` writes it
    path = str(token)
    webhook = Webhook(
        server.url,
        timeout=2,
        retries=0,
        headers=(("X-Team", "payments"),),
        authorization=lambda: f"Bearer {read_token_file('--webhook-token-file', path)}",
    )
    try:
        deliver(webhook, {"version": BODY_VERSION, "target": "/app"})
        wait_until(lambda: webhook.delivered == 1, "the first delivery")
        token.write_text("second-token")  # the Secret rotated
        deliver(webhook)
        wait_until(lambda: webhook.delivered == 2, "the second delivery")
        token.unlink()  # and went away: the delivery fails, saying why, not the thread
        deliver(webhook)
        wait_until(lambda: webhook.failed == 1, "the third delivery")
        token.write_text("third-token")
        deliver(webhook)
        wait_until(lambda: webhook.delivered == 3, "the fourth delivery")
    finally:
        webhook.close()
        server.stop()
    first, second, fourth = server.requests
    assert first["headers"]["Authorization"] == "Bearer first-token"
    assert second["headers"]["Authorization"] == "Bearer second-token"
    assert fourth["headers"]["Authorization"] == "Bearer third-token"
    assert first["headers"]["X-Team"] == "payments"
    assert first["headers"]["Content-Type"] == "application/json"
    assert first["headers"]["User-Agent"].startswith("oomhero/")
    assert json.loads(first["body"]) == {"version": 1, "target": "/app"}


def test_headers_and_the_token_come_from_flags_or_env_and_are_never_shown():
    def outputs(argv: list[str], environ: dict[str, str]):
        return parse_outputs(build_parser().parse_args(["watch", "x", *argv]), environ)

    given = outputs(
        ["--webhook", "http://h/", "--webhook-header", "X-A: 1", "--webhook-header", "X-B: a b"],
        {},
    )
    assert given.webhook_headers == (("X-A", "1"), ("X-B", "a b"))
    from_env = outputs(
        [],
        {
            "OOMHERO_WEBHOOK": "https://h:8443/x",
            "OOMHERO_WEBHOOK_HEADERS": "X-A: 1\nX-B: 2",
            "OOMHERO_WEBHOOK_TOKEN": " s3cr3t.token= \n",
        },
    )
    assert from_env.webhook_headers == (("X-A", "1"), ("X-B", "2"))
    assert from_env.webhook_token == "s3cr3t.token="
    assert "s3cr3t" not in repr(from_env) and "X-A" not in repr(from_env)
