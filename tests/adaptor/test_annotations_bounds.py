"""Resource annotations: ASCII digits only, with upper bounds."""

from __future__ import annotations

import pytest

from adaptor.annotations import (
    DEFAULT_GPUS,
    DEFAULT_MEMORY,
    DEFAULT_VCPUS,
    MAX_GPUS,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    Resources,
    resources,
)
from adaptor.errors import InvalidRequest


def test_plain_values_and_bounds_are_accepted() -> None:
    got = resources({DEFAULT_VCPUS: " 4 ", DEFAULT_MEMORY: "8192", DEFAULT_GPUS: "0"})
    assert got == Resources(vcpus=4, memory_mib=8192)
    top = resources({DEFAULT_VCPUS: str(MAX_VCPUS), DEFAULT_MEMORY: str(MAX_MEMORY_MIB),
                     DEFAULT_GPUS: str(MAX_GPUS)})
    assert (top.vcpus, top.memory_mib, top.gpus) == (MAX_VCPUS, MAX_MEMORY_MIB, MAX_GPUS)
    assert resources({DEFAULT_VCPUS: "0004"}).vcpus == 4


@pytest.mark.parametrize(
    "value",
    [
        "\u0663",  # ARABIC-INDIC DIGIT THREE: int() takes it
        "\uff14",  # FULLWIDTH DIGIT FOUR
        "1_000",  # int() takes underscores
        "+2",
        "-0",
        "0x10",
        "2\n2026/01/01 00:00:00 [adaptor] forged",
        "9" * 5000,  # beyond int()'s digit limit
    ],
)
@pytest.mark.parametrize("key", [DEFAULT_VCPUS, DEFAULT_MEMORY, DEFAULT_GPUS])
def test_only_ascii_digits(key: str, value: str) -> None:
    with pytest.raises(InvalidRequest, match=rf"annotation {key}: .* is not a valid .*"
                       r"\(expected a non-negative decimal integer\)") as caught:
        resources({key: value})
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("key", "limit"),
    [(DEFAULT_VCPUS, MAX_VCPUS), (DEFAULT_MEMORY, MAX_MEMORY_MIB), (DEFAULT_GPUS, MAX_GPUS)],
)
def test_values_over_the_bound_are_refused(key: str, limit: int) -> None:
    with pytest.raises(InvalidRequest, match=rf"{limit + 1} is more than the limit of {limit}"):
        resources({key: str(limit + 1)})
    with pytest.raises(InvalidRequest, match="more than the limit"):
        resources({key: "9" * 12})
