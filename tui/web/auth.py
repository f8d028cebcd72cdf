"""Who may use `chunkq web`, decided without any web framework: tokens, cookies, users, failures.

Everything here is pure (no aiohttp), so the rules are tested directly and the
server (``server.py``) only asks questions:

- A session is a signed cookie: ``payload.signature``, the payload base64url JSON
  (user, role, expiry, a random id), the signature HMAC-SHA256 with a secret the
  server draws at start (a restart logs everyone out; nothing to store or leak).
  The signature is compared in constant time, the expiry checked on every request,
  and a logged-out session's id is remembered until it would have expired anyway.
- The token (``CHUNKQ_WEB_TOKEN``) is compared with ``hmac.compare_digest``.
- Users live in a text file, one ``name:role:scrypt$n$r$p$salt$hash`` a line
  (``hashlib.scrypt``, a random salt each): no plain password is ever stored.
- Failed logins are limited per client address (a sliding window), so a token or
  password cannot be guessed at network speed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")

#: scrypt's cost: 16 MiB and ~50 ms a check (OWASP's minimum is n=2**17 with r=8 for 128 MiB;
#: a login is rare, but a 2-core server checking many at once must not run out of memory)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AuthConfigError(ValueError):
    """A users file or a name that cannot be used; the message says which line or what is wrong."""


@dataclass(frozen=True)
class Session:
    user: str
    role: Role
    expires: float
    sid: str


class SessionSigner:
    """Makes and checks session cookies; remembers logged-out sessions until they expire."""

    def __init__(self, secret: bytes | None = None, *, lifetime: float = 12 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime
        self.clock = clock
        self._revoked: dict[str, float] = {}

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()

    def issue(self, user: str, role: Role) -> tuple[str, Session]:
        """A new cookie value for ``user``, and the session it stands for."""
        session = Session(user, role, self.clock() + self.lifetime, secrets.token_hex(16))
        payload = base64.urlsafe_b64encode(json.dumps(
            {"u": session.user, "r": session.role, "e": session.expires, "s": session.sid},
            separators=(",", ":")).encode()).rstrip(b"=")
        return f"{payload.decode()}.{self._sign(payload)}", session

    def check(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, or None: unsigned, forged, expired, logged out or malformed."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 4096:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(self._sign(payload.encode()), signature):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["u"]), data["r"], float(data["e"]), str(data["s"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.role not in ROLES or session.expires <= self.clock() or session.sid in self._revoked:
            return None
        return session

    def revoked(self, session: Session) -> bool:
        return session.sid in self._revoked

    def revoke(self, session: Session) -> None:
        """Logout: the cookie stops working here even if the browser keeps it."""
        now = self.clock()
        for sid in [s for s, until in self._revoked.items() if until <= now]:  # forget what expired anyway
            del self._revoked[sid]
        self._revoked[session.sid] = session.expires


def token_matches(given: str, token: str | None) -> bool:
    """Constant-time comparison; no token configured means no token login."""
    if not token:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


# ------------------------------------------------------------------ the users file

def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=SCRYPT_MAXMEM)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=SCRYPT_MAXMEM, dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str


def check_user_name(name: str) -> str:
    if not USER_NAME.match(name):
        raise AuthConfigError("a user name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
                              "or digit")
    return name


def read_users(path: Path) -> dict[str, User]:
    """The users file; a missing file is no users, a malformed line an error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AuthConfigError(f"cannot read users file {path}: {exc.strerror or exc}") from None
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or parts[1] not in ROLES or not parts[2].startswith("scrypt$"):
            raise AuthConfigError(f"{path} line {number}: expected name:viewer|operator:scrypt$…")
        users[parts[0]] = User(parts[0], parts[1], parts[2])
    return users


def write_user(path: Path, name: str, role: Role, password: str) -> bool:
    """Add or replace ``name`` in the users file (created 0600); True if it replaced an existing user."""
    check_user_name(name)
    users = read_users(path)
    replaced = name in users
    users[name] = User(name, role, hash_password(password))
    lines = ["# chunkq web users: name:role:scrypt hash (written by `chunkq web adduser`)"]
    lines += [f"{u.name}:{u.role}:{u.password_hash}" for u in users.values()]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return replaced


def authenticate_user(users: dict[str, User], name: str, password: str) -> User | None:
    user = users.get(name)
    if user is None:
        # the same work as for a real user, so timing does not tell which names exist
        password_matches(password, _DUMMY_HASH)
        return None
    return user if password_matches(password, user.password_hash) else None


_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + base64.b64encode(bytes(64)).decode()


# ------------------------------------------------------------------ failed logins

class LoginLimiter:
    """At most ``limit`` failed logins per client address in ``window`` seconds; then refused until one ages out.

    The table is bounded: at most ``max_clients`` addresses are tracked (the
    oldest forgotten first), so a flood of addresses cannot grow it without end.
    """

    def __init__(self, limit: int = 5, window: float = 60.0, *, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.get(client, deque())
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        times = self._recent(client)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - self.clock())

    def failed(self, client: str) -> None:
        times = self._recent(client)
        times.append(self.clock())
        self._failures.pop(client, None)
        self._failures[client] = times  # most recent last, so the oldest go first below
        while len(self._failures) > self.max_clients:
            del self._failures[next(iter(self._failures))]
