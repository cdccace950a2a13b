"""Credential masking: what blocknas shows a person or writes to a store never holds a secret.

``mask_url`` is the one masking function; everything that can carry a URL or a config to a
terminal, a log, an MLflow param/tag/artifact or a report goes through it (directly, or through
``mask_config``/``masked_yaml`` for configs and ``mask_log_records`` for log records).

Masked, in a URL or in any text holding URLs (parsed with :mod:`urllib.parse`):

* the password of ``scheme://user:PASSWORD@host`` and of ``scheme://:PASSWORD@host`` (Redis);
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
from urllib.parse import unquote, unquote_plus, urlsplit

__all__ = ["mask_config", "mask_log_records", "mask_url", "masked_yaml", "remember_secrets"]

MASK = "***"
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PGPASSWORD")
_SECRET_WORDS = frozenset({"pwd", "pass", "key", "auth", "credentials"})  # the key's last word
_SECRET_ENDINGS = ("password", "passwd", "token", "secret", "apikey")  # also as its end: sslpassword, accessToken
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>`]+", re.IGNORECASE)
_ONE_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_PAIR = re.compile(r"(?P<head>(?:^|[&;])(?P<key>[^=&;]+)=)(?P<value>[^&;]*)")
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
    if _ONE_URL.fullmatch(text):  # one URL: parsed whole, so quotes in a password cannot cut it short
        masked = _mask_one(text)
    else:
        masked = _URL.sub(lambda match: _mask_one(match.group(0)), text)
    for secret in sorted(_known_secrets(), key=len, reverse=True):
        masked = masked.replace(secret, MASK)
    return masked


def _mask_one(url: str) -> str:
    """One ``scheme://…`` URL with its password and secret query/fragment values masked (and remembered).

    Rebuilt from the original text rather than with ``urlunsplit``, which would turn
    ``sqlite:///x`` into ``sqlite:/x``.
    """
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # e.g. an unbalanced "[" in the host: hide everything up to the last "@"
        head, _, rest = url.partition("://")
        return f"{head}://{MASK}@{rest.rpartition('@')[2]}" if "@" in rest else url
    head = url[: url.index("://") + 3]
    before_fragment, hashmark, fragment = url[len(head) :].partition("#")
    before_query, qmark, query = before_fragment.partition("?")
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
    else:  # a "/" left unencoded in a password ends urlsplit's netloc early; drivers read on to the "@"
        userinfo = before_query.rpartition("@")[0] if ":" in netloc else ""
    user, colon, password = userinfo.partition(":")
    if colon and "/" not in user:
        _remember(password)
        before_query = f"{user}:{MASK}@{before_query[len(userinfo) + 1 :]}"
    return f"{head}{before_query}{qmark}{_mask_pairs(query)}{hashmark}{_mask_pairs(fragment)}"


def _mask_pairs(pairs: str) -> str:
    """``a=1&password=x`` → ``a=1&password=***`` (``;`` separators too); keys of any case."""

    def hide(match: re.Match[str]) -> str:
        if not match.group("value") or not _secret_key(unquote_plus(match.group("key"))):
            return match.group(0)
        _remember(match.group("value"))
        return f"{match.group('head')}{MASK}"

    return _PAIR.sub(hide, pairs)


def _secret_key(key: object) -> bool:
    """``password``, ``PWD``, ``api_key``, ``accessToken``, ``db.secret``: the last word names a secret
    (``max_tokens``, ``tokenizer`` do not)."""
    last = re.split(r"[^a-z0-9]+", str(key).lower())[-1]
    return last in _SECRET_WORDS or last.endswith(_SECRET_ENDINGS)


def _remember(secret: str) -> None:
    forms = {s for s in (secret, unquote(secret), unquote_plus(secret)) if len(s) >= _MIN_SECRET and s != MASK}
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
