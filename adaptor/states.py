"""The sandbox state machine as a pure table: no I/O, no clock, no asyncio.

A :class:`State` is a phase plus what exists for the sandbox right now (:class:`Holdings`:
the instance, the worker end of the tunnel, the agent proxy, the VXLAN id). The sandbox
object performs each step and then reports what happened as an :class:`Event`;
:func:`advance` answers the next state or raises :class:`IllegalTransition`.

    CREATED --START--> STARTING --INSTANCE_CREATED, TUNNEL_UP, PROXY_UP--> RUNNING
    STARTING --(undo: PROXY_CLOSED, TUNNEL_REMOVED, INSTANCE_DELETED) SETTLE--> CREATED
    any --STOP--> STOPPING --(PROXY_CLOSED, INSTANCE_DELETED, TUNNEL_REMOVED,
                              VXLAN_RELEASED) SETTLE--> GONE
    SETTLE with something left to undo --> STOP_FAILED (what is held is what remains)
    STOP_FAILED --STOP--> STOPPING (a StopVM or the sweep retries the rest; an
                                    interrupted stop is retried from STOPPING)
    CREATED --INSTANCE_LEFT--> STOP_FAILED (an abandoned creation left an instance behind)

Only CREATED, STARTING, RUNNING and STOP_FAILED are written to the record; STOPPING is the
time a stop takes, GONE is a dropped record.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from adaptor.errors import IllegalTransition


class SandboxState(enum.StrEnum):
    CREATED = "created"  # CreateVM done, no instance yet
    STARTING = "starting"  # StartVM in progress (or undoing its own failure)
    RUNNING = "running"  # instance up, tunnel built, proxy serving
    STOPPING = "stopping"  # StopVM (or a retry of a failed one) in progress
    STOP_FAILED = "stop-failed"  # something could not be removed; the sweep/StopVM retries
    GONE = "gone"  # everything removed, record dropped


# The states a record on disk can carry (and the ``sandboxes{state}`` gauge reports).
RECORDED = (SandboxState.CREATED, SandboxState.STARTING, SandboxState.RUNNING,
            SandboxState.STOP_FAILED)


@dataclass(frozen=True, slots=True)
class Holdings:
    """What exists for one sandbox, besides its record."""

    instance: bool = False
    tunnel: bool = False  # the worker end of the tunnel (VXLAN device, NOTRACK rules)
    proxy: bool = False
    vxlan_id: bool = True  # the VXLAN id is allocated at CreateVM

    @property
    def to_undo(self) -> tuple[str, ...]:
        """The names of what is held, in the order a stop removes them."""
        names = ("proxy", "instance", "tunnel", "vxlan_id")
        return tuple(name for name in names if getattr(self, name))


@dataclass(frozen=True, slots=True)
class State:
    phase: SandboxState = SandboxState.CREATED
    holds: Holdings = Holdings()

    def remains(self) -> str:
        return ", ".join(self.holds.to_undo) or "nothing"


class Event(enum.StrEnum):
    START = "start"
    INSTANCE_CREATED = "instance-created"
    TUNNEL_UP = "tunnel-up"
    PROXY_UP = "proxy-up"
    STOP = "stop"
    PROXY_CLOSED = "proxy-closed"
    INSTANCE_DELETED = "instance-deleted"
    TUNNEL_REMOVED = "tunnel-removed"
    VXLAN_RELEASED = "vxlan-released"
    INSTANCE_LEFT = "instance-left"
    SETTLE = "settle"
    FORGET = "forget"  # another adaptor process removed the sandbox


S = SandboxState
_ALIVE = frozenset({S.CREATED, S.STARTING, S.RUNNING, S.STOPPING, S.STOP_FAILED})
_UNDOING = frozenset({S.STARTING, S.RUNNING, S.STOPPING})

# event -> (phases it may happen in, phase after it; None keeps the phase)
_PHASES: dict[Event, tuple[frozenset[SandboxState], SandboxState | None]] = {
    Event.START: (frozenset({S.CREATED, S.RUNNING}), S.STARTING),
    Event.INSTANCE_CREATED: (frozenset({S.STARTING}), None),
    Event.TUNNEL_UP: (frozenset({S.STARTING}), None),
    Event.PROXY_UP: (frozenset({S.STARTING, S.RUNNING}), S.RUNNING),
    Event.STOP: (_ALIVE, S.STOPPING),  # again from STOPPING: a stop was interrupted
    Event.PROXY_CLOSED: (_ALIVE, None),
    Event.INSTANCE_DELETED: (_UNDOING | {S.STOP_FAILED}, None),
    Event.TUNNEL_REMOVED: (_UNDOING | {S.STOP_FAILED}, None),
    Event.VXLAN_RELEASED: (frozenset({S.STOPPING}), None),
    Event.INSTANCE_LEFT: (frozenset({S.CREATED}), S.STOP_FAILED),
    Event.SETTLE: (frozenset({S.STARTING, S.STOPPING}), None),
    Event.FORGET: (_ALIVE, S.GONE),
}

# event -> (holding it needs, holding it sets or clears, new value)
_EFFECTS: dict[Event, tuple[str | None, str, bool]] = {
    Event.INSTANCE_CREATED: (None, "instance", True),
    Event.TUNNEL_UP: ("instance", "tunnel", True),
    Event.PROXY_UP: ("instance", "proxy", True),
    Event.PROXY_CLOSED: (None, "proxy", False),
    Event.INSTANCE_DELETED: (None, "instance", False),
    Event.TUNNEL_REMOVED: (None, "tunnel", False),
    Event.VXLAN_RELEASED: (None, "vxlan_id", False),
    Event.INSTANCE_LEFT: (None, "instance", True),
}


def advance(state: State, event: Event) -> State:
    """The state after ``event``; :class:`IllegalTransition` when it cannot happen there."""
    allowed, phase = _PHASES[event]
    if state.phase not in allowed:
        raise IllegalTransition(_describe(state, event))
    holds = state.holds
    effect = _EFFECTS.get(event)
    if effect is not None:
        needs, name, value = effect
        if needs is not None and not getattr(holds, needs):
            raise IllegalTransition(_describe(state, event))
        holds = dataclasses.replace(holds, **{name: value})
    if event is Event.START and holds.proxy:
        raise IllegalTransition(_describe(state, event))  # a serving sandbox is not started again
    if event is Event.SETTLE:
        phase = _settled(state.phase, holds)
    elif event is Event.FORGET:
        holds = Holdings(vxlan_id=False)
    return State(phase or state.phase, holds)


def _settled(phase: SandboxState, holds: Holdings) -> SandboxState:
    if phase is S.STOPPING:
        return S.GONE if not holds.to_undo else S.STOP_FAILED
    # An undone StartVM: back to CREATED when only the VXLAN id (kept for a retry) is left.
    if holds.instance or holds.tunnel or holds.proxy:
        return S.STOP_FAILED
    return S.CREATED


def recorded(phase: SandboxState) -> SandboxState:
    """The phase a record on disk carries for ``phase`` (a stop in progress is not
    written: until it ends, the record keeps the phase the stop began in)."""
    return phase if phase in RECORDED else S.RUNNING


def loaded(phase: SandboxState, *, instance: bool, tunnel: bool) -> State:
    """The state of a sandbox read back from its record (no proxy serves yet)."""
    return State(phase, Holdings(instance=instance, tunnel=tunnel, proxy=False, vxlan_id=True))


def _describe(state: State, event: Event) -> str:
    return (f"{event.value} is not allowed in state {state.phase.value} "
            f"(holding {state.remains()})")
