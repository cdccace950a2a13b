"""Credential masking: what blocknas shows a person or writes to a store never holds a secret.

``mask_url`` is the one masking function; everything that can carry a URL or a config to a
terminal, a log, an MLflow param/tag/artifact or a report goes through it (directly, or through
``mask_config``/``masked_yaml`` for configs and ``mask_log_records`` for log records).

Masked, in a URL or in any text holding URLs:

* the password of ``scheme://user:PASSWORD@host`` and of ``scheme://:PASSWORD@host`` (Redis),
  whatever it holds (``#``, ``?``, ``/``, ``@``, spaces), checked with the parser of the URL's
  driver: SQLAlchemy's for databases, redis-py's for Redis, requests' (MLflow's) for HTTP;
* the value of secret-looking query or fragment keys: ``?password=…`` (libpq), ``passwd``,
  ``pwd``, ``token``, ``access_token``, ``secret``, ``key``, ``api_key``, … in any case;
* every secret seen so far, anywhere in the text, raw and percent-decoded: a driver's error
  message may repeat a password outside any URL;
* the values of ``$MLFLOW_TRACKING_PASSWORD``, ``$MLFLOW_TRACKING_TOKEN`` and ``$PGPASSWORD``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from requests.utils import get_auth_from_url
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["mask_config", "mask_log_records", "mask_url", "masked_yaml", "remember_secrets"]

MASK = "***"
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PGPASSWORD")
_SECRET_WORDS = frozenset({"pwd", "pass", "key", "auth", "credentials"})  # the key's last word
_SECRET_ENDINGS = ("password", "passwd", "token", "secret", "apikey")  # also as its end: sslpassword, accessToken
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>`]+", re.IGNORECASE)
_ONE_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\n]+", re.IGNORECASE)
_PAIR = re.compile(r"(?P<head>(?:^|[&;])(?P<key>[^=&;]+)=)(?P<value>[^&;]*)")
_FRAGMENT_PAIR = re.compile(r"(?P<head>(?:^|[&;#?])(?P<key>[^=&;#?]+)=)(?P<value>[^&;#?]*)")
_MIN_SECRET = 4  # shorter secrets are masked in their URL, but not hunted for in free text

# Secrets taken out of URLs so far in this process, to mask where else they turn up.
_seen: set[str] = set()
_seen_lock = threading.Lock()  # log records are masked in whichever thread logs them


def mask_url(text: str) -> str:
    """``text`` (a URL, or any text holding URLs) with every credential replaced by ``***``.

    ``postgresql://u:pw@h/db`` → ``postgresql://u:***@h/db``,
    ``redis://:pw@h:6379/0`` → ``redis://:***@h:6379/0``,
    ``postgresql://u@h/db?password=pw`` → ``postgresql://u@h/db?password=***``.
    Text without a credential (a journal path, ``sqlite:///runs/optuna.db``) comes back unchanged.
    """
    masked = _mask_known(text)
    if _ONE_URL.fullmatch(masked):  # one URL (a setting, a flag): parsed whole, spaces and quotes included
        masked = _mask_one(masked)
    else:
        masked = _URL.sub(lambda match: _mask_one(match.group(0)), masked)
    return _mask_known(masked)


def _mask_known(text: str) -> str:
    """Every known secret that stands as a token of its own in ``text`` (not glued to letters or digits).

    A remembered piece of a password (``long`` from ``Qx/7@long``) must not eat the same letters
    inside an ordinary word: ``longer`` in a JSON key or ``standard`` in an ``arch.yaml`` would turn
    an artifact into one nobody can read back. Where a secret appears (``:Qx/7@long@``, ``"long"``,
    ``password=long&``) a non-alphanumeric character or the text's end bounds it.
    """
    for secret in sorted(_known_secrets(), key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, text)
    return text


def _mask_one(url: str) -> str:
    """One ``scheme://…`` URL with its password and secret query/fragment values masked (and remembered).

    The password runs from the user's ``:`` to the *last* ``@``: the widest reading of any
    parser (SQLAlchemy's ends at the first ``@``, urllib's at a ``/``, ``?`` or ``#``), so a
    ``#``, ``?``, ``/``, ``@`` or space left unencoded in it is hidden too. The result is then
    read by the parser the URL's driver uses (:func:`_driver_secrets`); should that still find
    a secret, everything after ``://`` is hidden. Rebuilt from the original text rather than
    with ``urlunsplit``, which would turn ``sqlite:///x`` into ``sqlite:/x``.
    """
    for secret in _driver_secrets(url):
        _remember(secret)
    head, _, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    start = 0
    if at and colon and "/" not in user:
        _remember(password)
        rest = f"{user}:{MASK}@{host}"
        start = len(user) + len(MASK) + 2
    query = re.search(r"[?#]", rest[start:])
    if query:
        cut = start + query.end()
        rest = rest[:cut] + _mask_pairs(rest[cut:])
    masked = f"{head}://{rest}"
    return masked if all(s == MASK for s in _driver_secrets(masked)) else f"{head}://{MASK}"


def _driver_secrets(url: str) -> list[str]:
    """The password and secret-keyed query values of ``url`` as its driver reads them (none if it cannot).

    redis-py's ``parse_url`` for Redis, requests' (MLflow's HTTP client) for ``http(s)``, and
    SQLAlchemy's ``make_url`` (Optuna's and MLflow's RDB stores) for any other scheme.
    """
    scheme = url.partition("://")[0].lower()
    try:
        if scheme in ("redis", "rediss", "unix"):
            found: dict[str, Any] = _parse_redis_url(url)
        elif scheme in ("http", "https"):
            parts = urlsplit(url)
            found = {"password": get_auth_from_url(url)[1], **dict(parse_qsl(f"{parts.query}&{parts.fragment}"))}
        else:
            parsed = make_url(url)
            found = {"password": parsed.password, **parsed.query}
    except (ValueError, ArgumentError):  # a URL its driver cannot read is never used with a password
        return []
    values = (
        v for key, value in found.items() if _secret_key(key) for v in (value if isinstance(value, tuple) else [value])
    )
    return [str(v) for v in values if v]


def _parse_redis_url(url: str) -> dict[str, Any]:
    try:
        from redis.connection import parse_url
    except ImportError:  # redis-py is optional; without it no Redis URL is opened, so nothing is read
        return {}
    return dict(parse_url(url))


def _mask_pairs(pairs: str) -> str:
    """``a=1&password=x`` → ``a=1&password=***``; keys of any case.

    Read twice, as each parser would: split at ``&`` and ``;`` only (SQLAlchemy: a value
    ``Pa#ss`` is whole), then at ``#`` and ``?`` too (urllib: ``a=1#token=x`` holds a token).
    """

    def hide(match: re.Match[str]) -> str:
        if not match.group("value") or not _secret_key(unquote_plus(match.group("key"))):
            return match.group(0)
        _remember(match.group("value"))
        return f"{match.group('head')}{MASK}"

    return _FRAGMENT_PAIR.sub(hide, _PAIR.sub(hide, pairs))


def _secret_key(key: object) -> bool:
    """``password``, ``PWD``, ``api_key``, ``accessToken``, ``db.secret``: the last word names a secret
    (``max_tokens``, ``tokenizer`` do not)."""
    last = re.split(r"[^a-z0-9]+", str(key).lower())[-1]
    return last in _SECRET_WORDS or last.endswith(_SECRET_ENDINGS)


def _remember(secret: str) -> None:
    """Learn ``secret`` (raw and percent-decoded), and the pieces a driver may show of it: one that
    reads ``Pa#ss@h`` as host ``Pa`` and port ``ss@h`` says so in its error."""
    forms = {secret, unquote(secret), unquote_plus(secret)}
    forms |= {piece for form in forms for piece in re.split(r"[#?/@]", form)}
    forms = {s for s in forms if len(s) >= _MIN_SECRET and s != MASK}
    with _seen_lock:
        _seen.update(forms)


def _known_secrets() -> set[str]:
    from_env = {os.environ.get(name, "") for name in SECRET_ENV}
    with _seen_lock:
        return _seen | {s for s in from_env if len(s) >= _MIN_SECRET}


def remember_secrets(*texts: str) -> None:
    """Learn the credentials in these URLs (or texts), so ``mask_url`` hides them wherever they turn up.

    For credentials that reach a driver before blocknas masks anything: the command line's
    ``--storage``, whose password a connection error may repeat outside any URL.
    """
    for text in texts:
        mask_url(text)


def mask_config(data: Any) -> Any:
    """A copy of a (nested) config with every string masked, and secret-looking keys' values hidden.

    Mappings, lists and tuples are walked; ``{"api_token": "abc"}`` → ``{"api_token": "***"}``;
    other values are kept. The input is not changed.
    """
    if isinstance(data, Mapping):
        return {
            key: MASK if isinstance(value, str) and value and _secret_key(key) else mask_config(value)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return type(data)(mask_config(item) for item in data)
    return mask_url(data) if isinstance(data, str) else data


def masked_yaml(data: Mapping[str, Any]) -> str:
    """The YAML text of a config (``study.yaml``, ``ablation.yaml``, ``train.yaml``) with secrets masked."""
    import yaml

    return yaml.safe_dump(mask_config(data), sort_keys=False)


class _MaskingFactory:
    """Log record factory that masks each record's message once it is formatted."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it when the record is emitted
            return record
        masked = mask_url(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record


def mask_log_records() -> None:
    """Mask credentials in every log record of this process, blocknas's and its libraries' alike.

    Idempotent; the command line calls it first thing, so a driver that logs a URL cannot leak it.
    """
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _MaskingFactory):
        logging.setLogRecordFactory(_MaskingFactory(factory))
