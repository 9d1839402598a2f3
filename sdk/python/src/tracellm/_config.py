"""Process-wide SDK configuration: defaults, environment variables, ``configure()``."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"

_FALSE = {"0", "false", "no", "off", "disabled"}


def _env_str(name: str) -> Optional[str]:
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _env_float(name: str, default: float) -> float:
    value = _env_str(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        return default


def _env_int(name: str, default: int) -> int:
    value = _env_str(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default


@dataclass(frozen=True)
class Config:
    """Settings of the SDK. Read them with :func:`tracellm.get_config`.

    Every field can be changed with :func:`tracellm.configure`; the main ones also
    come from ``TRACELLM_*`` environment variables.
    """

    endpoint: str = DEFAULT_ENDPOINT
    """Base URL of the TraceLLM server (``TRACELLM_ENDPOINT``)."""
    api_key: Optional[str] = None
    """Project API key sent as ``Authorization: Bearer`` (``TRACELLM_API_KEY``)."""
    project: Optional[str] = None
    """Project name sent as ``X-TraceLLM-Project`` (``TRACELLM_PROJECT``)."""
    enabled: bool = True
    """``False`` turns every decorator and wrapper into a pass-through (``TRACELLM_ENABLED=false``)."""
    capture_content: bool = True
    """``False`` records no inputs and outputs, only timing, tokens, models and errors
    (``TRACELLM_CAPTURE_CONTENT=false``)."""
    max_field_chars: int = 32_000
    """Size cap of one captured value (arguments, return value, messages), in characters."""
    max_queue_size: int = 10_000
    """Finished traces waiting for export; beyond it new traces are dropped and counted."""
    max_spans_per_trace: int = 10_000
    """Spans kept in one trace; further spans are dropped and counted."""
    max_batch_size: int = 500
    """Traces in one HTTP request."""
    max_batch_bytes: int = 2_000_000
    """Size of one HTTP request body (the server refuses bodies over 10 MB)."""
    flush_interval: float = 0.2
    """Seconds the exporter waits to gather a batch before sending."""
    timeout: float = 10.0
    """Seconds one HTTP request may take."""
    initial_backoff: float = 0.2
    """First retry delay after a failed export, doubled on each failure."""
    max_backoff: float = 5.0
    """Longest retry delay (a server's ``Retry-After`` is honoured up to ``max_retry_after``)."""
    max_retry_after: float = 60.0
    """Longest ``Retry-After`` the exporter will honour."""
    shutdown_timeout: float = 5.0
    """Seconds the exit handler waits for pending traces to be sent."""

    @classmethod
    def from_env(cls) -> "Config":
        enabled = (_env_str("TRACELLM_ENABLED") or "true").lower() not in _FALSE
        capture = (_env_str("TRACELLM_CAPTURE_CONTENT") or "true").lower() not in _FALSE
        return cls(
            endpoint=_env_str("TRACELLM_ENDPOINT") or DEFAULT_ENDPOINT,
            api_key=_env_str("TRACELLM_API_KEY"),
            project=_env_str("TRACELLM_PROJECT"),
            enabled=enabled,
            capture_content=capture,
            max_queue_size=_env_int("TRACELLM_MAX_QUEUE_SIZE", cls.max_queue_size),
            flush_interval=_env_float("TRACELLM_FLUSH_INTERVAL", cls.flush_interval),
            timeout=_env_float("TRACELLM_TIMEOUT", cls.timeout),
        )


_lock = threading.Lock()
_config: Config = Config.from_env()


def _new_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the moment of fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)

_UNSET: Any = object()


def get_config() -> Config:
    """The configuration in force."""
    return _config


def configure(
    endpoint: Optional[str] = _UNSET,
    api_key: Optional[str] = _UNSET,
    project: Optional[str] = _UNSET,
    **options: Any,
) -> Config:
    """Change the SDK's settings; arguments left out keep their value.

    ``endpoint``, ``api_key`` and ``project`` override ``TRACELLM_ENDPOINT``,
    ``TRACELLM_API_KEY`` and ``TRACELLM_PROJECT``. Other keyword arguments are the
    fields of :class:`Config` (``enabled``, ``max_queue_size``, ``flush_interval``, ...).
    Takes effect for traces exported from now on. Returns the new configuration.
    """
    global _config
    known = {f.name for f in fields(Config)}
    unknown = set(options) - known
    if unknown:
        raise TypeError("configure() got unknown option(s): %s" % ", ".join(sorted(unknown)))
    changes = dict(options)
    if endpoint is not _UNSET:
        changes["endpoint"] = endpoint or DEFAULT_ENDPOINT
    if api_key is not _UNSET:
        changes["api_key"] = api_key or None
    if project is not _UNSET:
        changes["project"] = project or None
    if "endpoint" in changes:
        changes["endpoint"] = str(changes["endpoint"]).rstrip("/")
    with _lock:
        _config = replace(_config, **changes)
        return _config


def reset_config() -> Config:
    """Back to defaults and environment variables (mainly for tests)."""
    global _config
    with _lock:
        _config = Config.from_env()
        return _config
