"""What every cloud provider reuses, so that a provider is its settings, its SDK calls and
its error table.

- :class:`BlockingCalls`: the provider's own worker threads for a blocking SDK (asyncio's
  default pool is only cpus + 4 threads, shared by the whole daemon).
- :class:`ErrorTable` and :func:`translate_errors`: SDK exceptions become the
  :class:`providers.base.ProviderError` tree at one edge.
- :class:`SdkCaller`: one blocking SDK call through the rate limiter, the retry loop of
  :mod:`providers.ratelimit` and the error table.
- :class:`TagMap`: logical tag keys (``providers.base.*_TAG``) to the keys a cloud accepts
  and back; :func:`instance_tags` and :func:`matches` are the one place tags are merged and
  filtered.
- :func:`refuse_unsupported`: the :class:`providers.base.InvalidSpec` for spec fields a
  provider cannot honour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from providers.base import (
    SANDBOX_TAG,
    InstanceRequest,
    InstanceSpec,
    InstanceState,
    InvalidSpec,
    ProviderError,
    Throttled,
)
from providers.ratelimit import Backoff, RateLimitTimeout, RetryHook, TokenBucket, retry

T = TypeVar("T")

# ---------------------------------------------------------------------- threads


class BlockingCalls:
    """A provider's own pool of worker threads for its blocking SDK calls."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._closed = False

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Run ``fn(*args, **kwargs)`` on one of the pool's threads."""
        return asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(fn, *args, **kwargs)
        )

    def close(self) -> None:
        """Stop taking calls; a call still running finishes on its thread. Idempotent."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=False)


# ----------------------------------------------------------------------- errors

Translator = Callable[[Exception], ProviderError]
Matcher = type[BaseException] | Callable[[BaseException], bool]
ErrorFactory = type[ProviderError] | Callable[[BaseException, str], ProviderError]


def already_translated(exc: BaseException, context: str) -> ProviderError | None:
    """What every translator does first: a rate limiter that did not admit the call is
    :class:`Throttled`, a :class:`ProviderError` stays as it is; ``None`` for anything else."""
    if isinstance(exc, RateLimitTimeout):
        return Throttled(f"{context}: client-side rate limit did not admit the call in time")
    if isinstance(exc, ProviderError):
        return exc
    return None


@dataclass(frozen=True, slots=True)
class ErrorTable:
    """SDK exceptions to provider errors: the first rule whose matcher (an exception class
    or a predicate) accepts the exception makes the error, else ``default``.

    A rule's error is a :class:`ProviderError` subclass, built from ``"<context>: <exc>"``,
    or a function ``(exc, context) -> ProviderError`` for messages of its own.
    """

    rules: Sequence[tuple[Matcher, ErrorFactory]]
    default: ErrorFactory = ProviderError

    def translate(self, exc: BaseException, context: str) -> ProviderError:
        settled = already_translated(exc, context)
        if settled is not None:
            return settled
        for matcher, factory in self.rules:
            if isinstance(matcher, type):
                hit = isinstance(exc, matcher)
            else:
                hit = matcher(exc)
            if hit:
                return _make(factory, exc, context)
        return _make(self.default, exc, context)

    def __call__(self, context: str) -> Translator:
        """This table as a translator for one action (for :func:`translate_errors`)."""
        return functools.partial(self.translate, context=context)


def _make(factory: ErrorFactory, exc: BaseException, context: str) -> ProviderError:
    if isinstance(factory, type):
        return factory(f"{context}: {exc}")
    return factory(exc, context)


@contextmanager
def translate_errors(
    translate: Translator, catch: tuple[type[Exception], ...] = (Exception,)
) -> Iterator[None]:
    """Let :class:`ProviderError` through and turn the exceptions in ``catch`` into one (the
    rate limiter's timeout too, so that the message names the action)."""
    try:
        yield
    except RateLimitTimeout as exc:
        raise translate(exc) from exc
    except ProviderError:
        raise
    except catch as exc:
        raise translate(exc) from exc


# --------------------------------------------------------------------- SDK calls


def never_retry(_exc: Exception) -> Backoff | None:
    return None


@dataclass
class SdkCaller:
    """Blocking SDK calls on ``threads``, each through a rate limiter, the retry loop
    (``classify`` picks the backoff per exception) and a translator, within ``timeout``
    seconds per operation."""

    threads: BlockingCalls
    classify: Callable[[Exception], Backoff | None] = never_retry
    timeout: float = 120.0

    async def call(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        translate: Translator,
        limiter: TokenBucket | None = None,
        on_retry: RetryHook | None = None,
        **kwargs: Any,
    ) -> T:
        deadline = time.monotonic() + self.timeout

        async def attempt() -> T:
            return await self.threads.run(fn, *args, **kwargs)

        with translate_errors(translate):
            return await retry(
                attempt, classify=self.classify, deadline=deadline, limiter=limiter,
                clock=time.monotonic, on_retry=on_retry,
            )


# -------------------------------------------------------------------------- tags


def identity(text: str) -> str:
    return text


_LABEL_UNSAFE = re.compile(r"[^a-z0-9_-]")


def label_key(key: str) -> str:
    """A key as GCP-style labels allow it: lowercase, ``[a-z0-9_-]``, at most 63 chars,
    starting with a letter."""
    safe = _LABEL_UNSAFE.sub("_", key.lower())[:63]
    return safe if safe[:1].isalpha() else ("k" + safe)[:63]


@dataclass(frozen=True, slots=True)
class TagMap:
    """Logical tag keys to the keys a cloud accepts, and back.

    ``key`` maps one logical key to its cloud key (identity by default); the map must be
    one-to-one on the keys a provider uses. Values pass through unchanged: a cloud that
    restricts values too encodes them with ``value``/``unvalue``.
    """

    key: Callable[[str], str] = identity
    value: Callable[[str], str] = identity
    unvalue: Callable[[str], str] = identity

    def to_cloud(self, tags: Mapping[str, str]) -> dict[str, str]:
        return {self.key(k): self.value(v) for k, v in tags.items()}

    def from_cloud(
        self, tags: Mapping[str, str], logical_keys: Collection[str] = ()
    ) -> dict[str, str]:
        """Cloud tags back to logical ones. Keys listed in ``logical_keys`` whose cloud
        spelling differs come back under their logical name; other keys stay as stored."""
        names = {self.key(k): k for k in logical_keys}
        return {names.get(k, k): self.unvalue(v) for k, v in tags.items()}


def instance_tags(
    request: InstanceRequest, *, defaults: Mapping[str, str] | None = None, name_tag: str = ""
) -> dict[str, str]:
    """The logical tags of a new instance: ``defaults`` (settings), then ``request.tags``,
    then the sandbox id, then the name under ``name_tag`` when given; the last one wins."""
    tags = dict(defaults or {})
    tags.update(request.tags)
    tags[SANDBOX_TAG] = request.sandbox_id
    if name_tag:
        tags[name_tag] = request.name
    return tags


def matches(tags: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether ``tags`` carry every one of ``wanted`` (for providers that filter locally)."""
    return all(tags.get(key) == value for key, value in wanted.items())


# ------------------------------------------------------------------------- state


def state_of(word: str, table: Mapping[str, InstanceState]) -> InstanceState:
    """The :class:`InstanceState` for a cloud's state word (``UNKNOWN`` when not listed)."""
    return table.get(word, InstanceState.UNKNOWN)


# -------------------------------------------------------------------------- spec

SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(InstanceSpec))
_DEFAULT_SPEC = InstanceSpec()


def refuse_unsupported(
    spec: InstanceSpec, provider: str, honoured: Collection[str], why: str = ""
) -> None:
    """Raise :class:`InvalidSpec` when ``spec`` sets a field outside ``honoured``."""
    unknown = set(honoured) - set(SPEC_FIELDS)
    if unknown:
        raise ValueError(f"not InstanceSpec fields: {', '.join(sorted(unknown))}")
    refused = [
        f"{name}={getattr(spec, name)!r}" for name in SPEC_FIELDS
        if name not in honoured and getattr(spec, name) != getattr(_DEFAULT_SPEC, name)
    ]
    if refused:
        reason = f" ({why})" if why else ""
        raise InvalidSpec(
            f"the {provider} provider cannot honour {', '.join(refused)}{reason}"
        )
