"""Hypothesis strategies that build any styx.v1 message from its descriptor, valid or not.

Strings mix plausible ids and names with control characters, bidi overrides, NUL and
over-long values; numbers include NaN, infinities, zero, negatives and the extremes of
each integer type; enums include undefined values; nested messages stop at ``depth``.
Values near the rules (rules.proto) are likely, so both accepted and refused requests
are common.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

_WORDS = st.sampled_from(
    ["", "a", "t-1", "j-1", "node-1", "local", "aws", "us-east-1", "train", "../../etc", "A100:8", "x" * 129]
)
_TEXT = st.one_of(
    _WORDS,
    st.text(max_size=20),
    st.text(alphabet=st.sampled_from("ab\x00\x07\n\u202e\u200d\ud7ff -_."), max_size=12),
    st.integers(min_value=100, max_value=70_000).map(lambda n: "n" * n),
)


def _int(fd: FieldDescriptor) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[fd.type]
    edges = st.sampled_from(
        [v for v in (0, 1, -1, 63, 64, 100, 1000, 10_001, 2**63 - 1, 2**63, low, high) if low <= v <= high]
    )
    return st.one_of(
        edges, st.integers(min_value=low, max_value=high), st.integers(min_value=max(low, 0), max_value=min(high, 5))
    )


_FLOATS = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 4.0, -1.0, math.nan, math.inf, -math.inf, 1e300]),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _scalar(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _TEXT
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _FLOATS
    if fd.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in fd.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(min_value=-5, max_value=50))
    return _int(fd)


@st.composite
def messages(draw: st.DrawFn, desc: Descriptor, depth: int = 3, density: int = 2) -> Any:
    """A message of type ``desc`` with a random subset of its fields set (each with
    probability 1/density)."""
    message = message_factory.GetMessageClass(desc)()
    for fd in desc.fields:
        if fd.containing_oneof is not None and message.WhichOneof(fd.containing_oneof.name):
            continue
        if draw(st.integers(min_value=0, max_value=density - 1)) != 0:
            continue
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if is_map:
            key_fd, value_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
            entries = draw(st.dictionaries(_scalar(key_fd), _value(draw, value_fd, depth), max_size=3))
            target = getattr(message, fd.name)
            for key, value in entries.items():
                if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    target[key].CopyFrom(value)
                else:
                    target[key] = value
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.full_name.startswith("google.protobuf.") or depth <= 0:
                continue
            count = draw(st.integers(min_value=0, max_value=3)) if fd.is_repeated else 1
            for _ in range(count):
                child = draw(messages(fd.message_type, depth - 1, density))
                if fd.is_repeated:
                    getattr(message, fd.name).add().CopyFrom(child)
                else:
                    getattr(message, fd.name).CopyFrom(child)
        elif fd.is_repeated:
            getattr(message, fd.name).extend(draw(st.lists(_scalar(fd), max_size=4)))
        else:
            setattr(message, fd.name, draw(_scalar(fd)))
    return message


def _value(draw: st.DrawFn, fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(fd.message_type, depth - 1)
    return _scalar(fd)


@st.composite
def mutations(draw: st.DrawFn, seed: Any) -> Any:
    """``seed`` (a valid request) with a few fields overwritten by random values: requests
    that get past most checks, so the handlers' own paths run too."""
    message = type(seed)()
    message.CopyFrom(seed)
    message.MergeFrom(draw(messages(seed.DESCRIPTOR, density=6)))
    return message


def requests(desc: Descriptor, seed: Any | None) -> st.SearchStrategy[Any]:
    """Random messages of ``desc``, and mutations of ``seed`` when one is given."""
    return messages(desc) if seed is None else st.one_of(messages(desc), mutations(seed), st.just(seed))
