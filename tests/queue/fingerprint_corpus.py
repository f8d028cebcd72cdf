"""Real error messages from common libraries, in their own formats, grouped by bug.

Each ``Bug`` lists failures that an operator calls one problem: the same
exception type from the same code, with messages that differ only in the
entity, IDs, URLs, numbers, addresses and times. ``normalized`` is what the
grouped view shows for them. Two entries of the corpus are always two different
bugs, so their fingerprints must differ.

The messages are written the way each library builds them (``str(exc)``):
httpx ``HTTPStatusError``, requests ``HTTPError``/``ConnectionError`` (urllib3
2.x), botocore ``ClientError``, SQLAlchemy wrapping psycopg2, asyncpg, aiohttp,
pydantic v2, the OpenAI and Anthropic SDKs' ``APIStatusError`` (``Error code:
429 - {body}``), stripe-python (``Request req_…: message``), redis-py, the
standard library. Python's own messages (``KeyError``, ``json``, ``int()``,
codecs) are produced live by the tests instead, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

MDN = "For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/"


@dataclass(frozen=True)
class Bug:
    name: str
    error_type: str
    failures: tuple[tuple[str, str], ...]  # (message, entity_id)
    normalized: str


def _httpx(kind: str, status: str, url: str) -> str:
    """httpx ``Response.raise_for_status``: the status line quoted, the URL quoted, MDN's page on a second line."""
    return f"{kind} '{status}' for url '{url}'\n{MDN}{status.split()[0]}"


def _urllib3_refused(path: str, address: str, errno: str) -> str:
    return (
        f"HTTPSConnectionPool(host='api.example.com', port=443): Max retries exceeded with url: {path} "
        f"(Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at {address}>: "
        f"Failed to establish a new connection: {errno}'))"
    )


def _openai_429(org: str, model: str, limit: int, used: int, wait: str) -> str:
    return (
        "Error code: 429 - {'error': {'message': 'Rate limit reached for "
        f"{model} in organization {org} on requests per min (RPM): Limit {limit}, Used {used}, Requested 1. "
        f"Please try again in {wait}. Visit https://platform.openai.com/account/rate-limits to learn more.', "
        "'type': 'requests', 'param': None, 'code': 'rate_limit_exceeded'}}"
    )


def _sqlalchemy_unique(user_id: int, email: str) -> str:
    return (
        '(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "users_pkey"\n'
        f"DETAIL:  Key (id)=({user_id}) already exists.\n\n"
        "[SQL: INSERT INTO users (id, email) VALUES (%(id)s, %(email)s)]\n"
        f"[parameters: {{'id': {user_id}, 'email': '{email}'}}]\n"
        "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
    )


def _pydantic(value: str) -> str:
    return (
        "1 validation error for Company\nemployees\n"
        f"  Input should be a valid integer, unable to parse string as an integer [type=int_parsing, "
        f"input_value='{value}', input_type=str]\n"
        "    For further information visit https://errors.pydantic.dev/2.9/v/int_parsing"
    )


CORPUS: tuple[Bug, ...] = (
    Bug(
        "the entity in the message (the issue's example)",
        "ProviderError",
        (("upstream 500 for s-000011", "s-000011"), ("upstream 500 for s-000069", "s-000069")),
        "upstream 500 for <id>",
    ),
    Bug(
        "a different status from the same provider",
        "ProviderError",
        (("upstream 502 for s-000012", "s-000012"), ("upstream 502 for s-000070", "s-000070")),
        "upstream 502 for <id>",
    ),
    Bug(
        "httpx: 404 with the entity in the URL",
        "httpx.HTTPStatusError",
        (
            (_httpx("Client error", "404 Not Found", "https://api.example.com/v2/companies/acme.com"), "acme.com"),
            (_httpx("Client error", "404 Not Found", "https://api.example.com/v2/companies/globex.io"), "globex.io"),
        ),
        f"Client error '404 Not Found' for url 'https://api.example.com/v2/companies/<id>'\n{MDN}<seg>",
    ),
    Bug(
        "httpx: 500 with other query values",
        "httpx.HTTPStatusError",
        (
            (_httpx("Server error", "500 Internal Server Error",
                    "https://api.example.com/v2/companies/acme.com/people?page=2&limit=100"), "acme.com"),
            (_httpx("Server error", "500 Internal Server Error",
                    "https://api.example.com/v2/companies/initech.net/people?page=17&limit=100"), "initech.net"),
        ),
        "Server error '500 Internal Server Error' for url "
        f"'https://api.example.com/v2/companies/<id>/people?page=<val>&limit=<val>'\n{MDN}<seg>",
    ),
    Bug(
        "httpx: connect timeout (the same text every time)",
        "httpx.ConnectTimeout",
        (("timed out", "acme.com"), ("timed out", "globex.io")),
        "timed out",
    ),
    Bug(
        "httpx: read timeout",
        "httpx.ReadTimeout",
        (("The read operation timed out", "acme.com"), ("The read operation timed out", "globex.io")),
        "The read operation timed out",
    ),
    Bug(
        "requests: 503 with an id in the query",
        "requests.exceptions.HTTPError",
        (
            ("503 Server Error: Service Unavailable for url: https://api.example.com/v1/people?id=123", "p-123"),
            ("503 Server Error: Service Unavailable for url: https://api.example.com/v1/people?id=98765", "p-98765"),
        ),
        "503 Server Error: Service Unavailable for url: https://api.example.com/v1/people?id=<val>",
    ),
    Bug(
        "requests: connection refused, another path and object address each time",
        "requests.exceptions.ConnectionError",
        (
            (_urllib3_refused("/v1/people/123", "0x7f3b2c1d9e50", "[Errno 111] Connection refused"), "123"),
            (_urllib3_refused("/v1/people/4711", "0x7f3b2c0a1f10", "[Errno 111] Connection refused"), "4711"),
        ),
        "HTTPSConnectionPool(host='api.example.com', port=<n>): Max retries exceeded with url: /v1/people/<seg> "
        "(Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at <hex>>: "
        "Failed to establish a new connection: [Errno 111] Connection refused'))",
    ),
    Bug(
        "requests: the host does not resolve (a different errno)",
        "requests.exceptions.ConnectionError",
        (
            (_urllib3_refused("/v1/people/123", "0x7f3b2c1d9e50", "[Errno -2] Name or service not known"), "123"),
            (_urllib3_refused("/v1/people/88", "0x7f0000aa0010", "[Errno -2] Name or service not known"), "88"),
        ),
        "HTTPSConnectionPool(host='api.example.com', port=<n>): Max retries exceeded with url: /v1/people/<seg> "
        "(Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at <hex>>: "
        "Failed to establish a new connection: [Errno -2] Name or service not known'))",
    ),
    Bug(
        "botocore: throttled",
        "botocore.exceptions.ClientError",
        (
            ("An error occurred (ThrottlingException) when calling the PutItem operation "
             "(reached max retries: 4): Rate exceeded", "u-1"),
            ("An error occurred (ThrottlingException) when calling the PutItem operation "
             "(reached max retries: 9): Rate exceeded", "u-2"),
        ),
        "An error occurred (ThrottlingException) when calling the PutItem operation "
        "(reached max retries: <n>): Rate exceeded",
    ),
    Bug(
        "botocore: missing S3 key",
        "botocore.exceptions.ClientError",
        (
            ("An error occurred (NoSuchKey) when calling the GetObject operation: The specified key does not exist.",
             "u-1"),
            ("An error occurred (NoSuchKey) when calling the GetObject operation: The specified key does not exist.",
             "u-2"),
        ),
        "An error occurred (NoSuchKey) when calling the GetObject operation: The specified key does not exist.",
    ),
    Bug(
        "SQLAlchemy over psycopg2: duplicate primary key",
        "sqlalchemy.exc.IntegrityError",
        ((_sqlalchemy_unique(42, "ann@example.com"), "42"), (_sqlalchemy_unique(1337, "bob@example.org"), "1337")),
        '(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "users_pkey"\n'
        "DETAIL:  Key (id)=(<n>) already exists.\n\n"
        "[SQL: INSERT INTO users (id, email) VALUES (%(id)s, %(email)s)]\n"
        "[parameters: {'id': <n>, 'email': '<str>'}]\n"
        "(Background on this error at: https://sqlalche.me/e/<seg>/gkpj)",
    ),
    Bug(
        "asyncpg: duplicate e-mail (another constraint)",
        "asyncpg.exceptions.UniqueViolationError",
        (
            ('duplicate key value violates unique constraint "users_email_key"\n'
             "DETAIL:  Key (email)=(ann@example.com) already exists.", "c-1"),
            ('duplicate key value violates unique constraint "users_email_key"\n'
             "DETAIL:  Key (email)=(bob.smith+x@example.org) already exists.", "c-2"),
        ),
        'duplicate key value violates unique constraint "users_email_key"\n'
        "DETAIL:  Key (email)=(<email>) already exists.",
    ),
    Bug(
        "aiohttp: 404 (status first, reason quoted)",
        "aiohttp.client_exceptions.ClientResponseError",
        (
            ("404, message='Not Found', url='https://api.example.com/v1/people/123/emails'", "123"),
            ("404, message='Not Found', url='https://api.example.com/v1/people/9/emails'", "9"),
        ),
        "404, message='<str>', url='https://api.example.com/v1/people/<seg>/emails'",
    ),
    Bug(
        "pydantic v2: a value that is not an integer",
        "pydantic_core._pydantic_core.ValidationError",
        ((_pydantic("about 50"), "acme.com"), (_pydantic("n/a"), "globex.io")),
        "<n> validation error for Company\nemployees\n"
        "  Input should be a valid integer, unable to parse string as an integer [type=int_parsing, "
        "input_value='<str>', input_type=str]\n"
        "    For further information visit https://errors.pydantic.dev/<seg>/v/int_parsing",
    ),
    Bug(
        "OpenAI SDK: rate limited, another organisation, limit and wait",
        "openai.RateLimitError",
        (
            (_openai_429("org-AbC123dEf456GhI789jKl0", "gpt-4o", 500, 500, "120ms"), "c-1"),
            (_openai_429("org-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2", "gpt-4o", 5000, 4999, "1.5s"), "c-2"),
        ),
        "Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4o in organization org-<ref> on "
        "requests per min (RPM): Limit <n>, Used <n>, Requested <n>. Please try again in <dur>. "
        "Visit https://platform.openai.com/account/rate-limits to learn more.', "
        "'type': '<str>', 'param': None, 'code': 'rate_limit_exceeded'}}",
    ),
    Bug(
        "OpenAI SDK: out of credits, the same status but another code",
        "openai.RateLimitError",
        (
            ("Error code: 429 - {'error': {'message': 'You exceeded your current quota, please check your plan and "
             "billing details.', 'type': 'insufficient_quota', 'param': None, 'code': 'insufficient_quota'}}", "c-1"),
            ("Error code: 429 - {'error': {'message': 'You exceeded your current quota, please check your plan and "
             "billing details.', 'type': 'insufficient_quota', 'param': None, 'code': 'insufficient_quota'}}", "c-2"),
        ),
        "Error code: 429 - {'error': {'message': 'You exceeded your current quota, please check your plan and "
        "billing details.', 'type': 'insufficient_quota', 'param': None, 'code': 'insufficient_quota'}}",
    ),
    Bug(
        "Anthropic SDK: overloaded, another request id",
        "anthropic.InternalServerError",
        (
            ("Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}, "
             "'request_id': 'req_011CUBh2ZQWmD3ibkzxWrs5o'}", "c-1"),
            ("Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}, "
             "'request_id': 'req_011CUBhA7pLq2Wc9Nn8vXy3D'}", "c-2"),
        ),
        "Error code: 529 - {'type': '<str>', 'error': {'type': 'overloaded_error', 'message': '<str>'}, "
        "'request_id': '<str>'}",
    ),
    Bug(
        "stripe-python: unknown customer, request ids in the message",
        "stripe.InvalidRequestError",
        (
            ("Request req_1Nh2Kx3aBcDeF9: No such customer: 'cus_NffrFeUfNV2Hib'", "cus_NffrFeUfNV2Hib"),
            ("Request req_8QwErTy5UiOp2A: No such customer: 'cus_PqR7sT8uVw9XyZ'", "cus_PqR7sT8uVw9XyZ"),
        ),
        "Request req_<ref>: No such customer: '<str>'",
    ),
    Bug(
        "redis-py: connection refused",
        "redis.exceptions.ConnectionError",
        (
            ("Error 111 connecting to 10.0.3.17:6379. Connection refused.", "k-1"),
            ("Error 111 connecting to 10.0.3.22:6380. Connection refused.", "k-2"),
        ),
        "Error 111 connecting to <ip>:<n>. Connection refused.",
    ),
    Bug(
        "a file per entity is missing",
        "FileNotFoundError",
        (
            ("[Errno 2] No such file or directory: '/tmp/exports/123.json'", "123"),
            ("[Errno 2] No such file or directory: '/tmp/exports/acme-7f3a9b2c.json'", "acme"),
        ),
        "[Errno 2] No such file or directory: '/tmp/exports/<seg>.json'",
    ),
    Bug(
        "the configuration file is missing (another file)",
        "FileNotFoundError",
        (
            ("[Errno 2] No such file or directory: '/etc/enricher/config.yaml'", "123"),
            ("[Errno 2] No such file or directory: '/etc/enricher/config.yaml'", "456"),
        ),
        "[Errno 2] No such file or directory: '/etc/enricher/config.yaml'",
    ),
    Bug(
        "a timeout that names its duration",
        "TimeoutError",
        (("entity timed out after 30s", "a-1"), ("entity timed out after 2.5s", "a-2")),
        "entity timed out after <dur>",
    ),
    Bug(
        "the entity URL-encoded in the middle of a URL",
        "ProviderError",
        (
            ("GET https://api.example.com/v1/people/ann%40example.com/profile?ts=2024-05-01T10:00:00Z returned 404",
             "ann@example.com"),
            ("GET https://api.example.com/v1/people/bob%40example.org/profile?ts=2024-06-11T23:59:01Z returned 404",
             "bob@example.org"),
        ),
        "GET https://api.example.com/v1/people/<id>/profile?ts=<val> returned 404",
    ),
    Bug(
        "ids, times and addresses of every kind",
        "ProviderError",
        (
            ("job 550e8400-e29b-41d4-a716-446655440000 at 2024-01-05T12:00:01.123Z from 192.168.1.20 "
             "(commit a1b2c3d4e5f6, user ann@example.com, upstream fe80::1ff:fe23:4567:890a) failed", "x-1"),
            ("job 123e4567-e89b-12d3-a456-426614174000 at 2025-11-30T06:00:00+01:00 from 10.1.2.3 "
             "(commit 0f9e8d7c6b5a4, user bob@example.org, upstream 2001:db8::8a2e:370:7334) failed", "x-2"),
        ),
        "job <uuid> at <ts> from <ip> (commit <hex>, user <email>, upstream <ip>) failed",
    ),
)
