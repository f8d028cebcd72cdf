"""The login rules without a server: cookies, tokens, the users file, failed-login limits, role checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from chunkq.tui.dashboard import commands
from chunkq.tui.web import auth


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_cookie_is_accepted_until_it_expires_or_is_logged_out() -> None:
    clock = Clock()
    signer = auth.SessionSigner(lifetime=60, clock=clock)
    cookie, session = signer.issue("ann", "viewer")
    assert signer.check(cookie) == session
    clock.now += 59
    assert signer.check(cookie) == session
    clock.now += 2
    assert signer.check(cookie) is None
    cookie, session = signer.issue("ann", "viewer")
    signer.revoke(session)
    assert signer.check(cookie) is None


def test_a_cookie_from_another_server_or_edited_is_refused() -> None:
    signer = auth.SessionSigner()
    cookie, _ = signer.issue("ann", "viewer")
    assert auth.SessionSigner().check(cookie) is None  # another secret (a restart): logged out
    payload, signature = cookie.split(".")
    flipped = signature[:-1] + ("1" if signature[-1] == "0" else "0")
    for bad in ("", "x", cookie + ".", payload + "." + flipped, "e30." + signature, None):
        assert signer.check(bad) is None


def test_tokens_compare_whole_and_no_token_means_no_token_login() -> None:
    assert auth.token_matches("s3cret-token-1234", "s3cret-token-1234")
    assert not auth.token_matches("s3cret-token-123", "s3cret-token-1234")
    assert not auth.token_matches("", None)
    assert not auth.token_matches("", "")


def test_the_users_file_stores_scrypt_hashes_only(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    assert auth.write_user(path, "ann", "viewer", "correct horse") is False
    assert auth.write_user(path, "ann", "operator", "battery staple") is True
    text = path.read_text()
    assert "battery staple" not in text and "correct horse" not in text
    assert path.stat().st_mode & 0o777 == 0o600
    users = auth.read_users(path)
    assert users["ann"].role == "operator"
    assert auth.authenticate_user(users, "ann", "battery staple") == users["ann"]
    assert auth.authenticate_user(users, "ann", "correct horse") is None
    assert auth.authenticate_user(users, "bob", "battery staple") is None
    path.write_text("ann:admin:scrypt$1\n")
    with pytest.raises(auth.AuthConfigError, match="line 1"):
        auth.read_users(path)
    with pytest.raises(auth.AuthConfigError):
        auth.check_user_name("a:b")


def test_failed_logins_are_limited_per_address_and_age_out() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(3, 60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") == 0
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(60)
    assert limiter.retry_after("10.0.0.2") == 0
    clock.now += 61
    assert limiter.retry_after("10.0.0.1") == 0
    small = auth.LoginLimiter(1, 60, max_clients=2, clock=clock)
    for address in ("a", "b", "c"):
        small.failed(address)
    assert small.retry_after("a") == 0 and small.retry_after("c") > 0  # bounded: the oldest forgotten


def test_every_dashboard_command_is_classified_for_the_viewer_role() -> None:
    actions = {c.action.split("(")[0] for c in commands.COMMANDS}
    unclassified = actions - commands.STATE_CHANGING_ACTIONS - commands.READ_ONLY_ACTIONS
    assert not unclassified, f"say whether these change state (commands.py): {sorted(unclassified)}"
    assert not commands.STATE_CHANGING_ACTIONS & commands.READ_ONLY_ACTIONS


@pytest.mark.parametrize("action", sorted(commands.STATE_CHANGING_ACTIONS))
def test_a_viewer_is_refused_every_state_change_and_an_operator_only_the_debugger(action: str) -> None:
    assert commands.refusal(None, action) is None  # the terminal dashboard: unchanged
    assert commands.refusal("viewer", action) is not None
    assert (commands.refusal("operator", action) is None) == (action != "debug_entity")


def test_a_viewer_may_still_look_and_unknown_commands_are_refused() -> None:
    for action in commands.READ_ONLY_ACTIONS:
        assert commands.refusal("viewer", action) is None
    assert commands.refusal("viewer", "cursor_left") is None  # Textual's own (an input's keys)
