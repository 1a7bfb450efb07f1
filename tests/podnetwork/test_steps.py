"""Steps with undo, and teardowns that try every removal: pure, no namespaces needed."""

from __future__ import annotations

import pytest

from podnetwork.errors import PodNetworkError
from podnetwork.steps import Step, apply, remove_all


class Journal:
    def __init__(self) -> None:
        self.entries: list[str] = []

    def step(self, name: str, *, fail: BaseException | None = None, undo: bool = True) -> Step:
        def do() -> None:
            self.entries.append(f"do {name}")
            if fail is not None:
                raise fail

        def take_back() -> None:
            self.entries.append(f"undo {name}")

        return Step(name, do, take_back if undo else None)


def test_all_steps_run_in_order_and_nothing_is_undone() -> None:
    journal = Journal()
    apply([journal.step("a"), journal.step("b")], lambda step, exc: None)
    assert journal.entries == ["do a", "do b"]


def test_a_failure_undoes_what_ran_newest_first_including_the_failed_step() -> None:
    journal = Journal()
    failing = PodNetworkError("c broke")
    with pytest.raises(PodNetworkError, match="c broke"):
        apply(
            [
                journal.step("a"),
                journal.step("b", undo=False),
                journal.step("c", fail=failing),
                journal.step("d"),
            ],
            lambda step, exc: None,
        )
    assert journal.entries == ["do a", "do b", "do c", "undo c", "undo a"]


def test_an_interruption_is_undone_too() -> None:
    journal = Journal()
    with pytest.raises(KeyboardInterrupt):
        apply([journal.step("a"), journal.step("b", fail=KeyboardInterrupt())], lambda s, e: None)
    assert journal.entries[-2:] == ["undo b", "undo a"]


def test_a_failing_undo_is_reported_and_the_others_still_run() -> None:
    journal = Journal()
    reported: list[tuple[str, str]] = []

    def broken_undo() -> None:
        raise PodNetworkError("cannot undo b")

    steps = [
        journal.step("a"),
        Step("b", lambda: journal.entries.append("do b"), broken_undo),
        journal.step("c", fail=PodNetworkError("c broke")),
    ]
    with pytest.raises(PodNetworkError, match="c broke"):  # the step's error, not the undo's
        apply(steps, lambda step, exc: reported.append((step.name, str(exc))))
    assert reported == [("b", "cannot undo b")]
    assert journal.entries == ["do a", "do b", "do c", "undo c", "undo a"]


def test_remove_all_tries_every_removal_then_names_each_failure() -> None:
    ran: list[str] = []

    def removal(name: str, error: str | None = None) -> Step:
        def remove() -> None:
            ran.append(name)
            if error:
                raise PodNetworkError(error)

        return Step(name, remove)

    removals = [removal("a", "a is busy"), removal("b"), removal("c", "c is busy")]
    with pytest.raises(PodNetworkError) as info:
        remove_all([r.do for r in removals])
    assert ran == ["a", "b", "c"]
    assert str(info.value) == "a is busy; c is busy"

    with pytest.raises(PodNetworkError) as info:
        remove_all([lambda: None, removal("b", "only b").do])
    assert str(info.value) == "only b"
    remove_all([lambda: None])  # nothing failed: nothing raised


def test_remove_all_lets_programming_errors_through() -> None:
    def broken() -> None:
        raise TypeError("bug")

    with pytest.raises(TypeError):
        remove_all([broken])
