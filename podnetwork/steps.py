"""Applying a plan as small steps, each with its undo, and removing what a plan built.

:func:`apply` runs steps in order; when one fails (or the caller is interrupted), the steps
already run, and the failing one, are undone newest first, then the error is re-raised. An
undo therefore has to be safe when its step ran only in part or not at all: every undo here
removes something only if it is present ("missing" counts as "already done").

:func:`remove_all` runs every removal of a teardown even when an earlier one failed, then
raises one :class:`PodNetworkError` naming what could not be removed. Repeating a teardown
after such a failure finishes the job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from podnetwork.errors import PodNetworkError

Action = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Step:
    """One change: ``do`` makes it, ``undo`` takes it back (``None``: nothing to take back,
    or the undo of an earlier step covers it)."""

    name: str
    do: Action
    undo: Action | None = None


def apply(steps: Iterable[Step], undo_failed: Callable[[Step, Exception], None]) -> None:
    """Run ``steps`` in order; on any failure undo what was done, newest first, and re-raise.

    An undo that fails is reported to ``undo_failed`` and the others still run: the error
    of the step is the one the caller sees.
    """
    started: list[Step] = []
    try:
        for step in steps:
            started.append(step)
            step.do()
    except BaseException:
        undo(started, undo_failed)
        raise


def undo(started: Sequence[Step], undo_failed: Callable[[Step, Exception], None]) -> None:
    """Undo ``started`` newest first; failures go to ``undo_failed``."""
    for step in reversed(started):
        if step.undo is None:
            continue
        try:
            step.undo()
        except Exception as exc:
            undo_failed(step, exc)


def remove_all(removals: Sequence[Action]) -> None:
    """Run every removal; then raise :class:`PodNetworkError` if any failed.

    A removal reports failure as a :class:`PodNetworkError`. With one failure that error is
    raised as it is; with several, one error joins their messages with ``"; "``.
    """
    errors: list[PodNetworkError] = []
    for removal in removals:
        try:
            removal()
        except PodNetworkError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PodNetworkError("; ".join(str(e) for e in errors)) from errors[0]
