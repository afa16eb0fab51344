"""Request validation driven by the proto: the rules of proto/styx/v1/rules.proto.

``validate(message)`` checks a request against the ``(styx.v1.rules)`` options on its
fields, the ``(styx.v1.message_rules)`` options on its messages, and the rules that hold
for every field (finite numbers, defined enum values, a default string length cap). The
server interceptor calls it for every request before the handler runs, so every RPC is
checked by one validator per message type, compiled once from the descriptors.

Only set fields are visited (``ListFields``): unset proto3 scalars hold their defaults,
which pass every rule but ``required``. That keeps a 100k-task SubmitJob cheap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from styx.common.errors import InvalidArgument, quote
from styx.common.secretbox import REDACTED
from styx.v1 import rules_pb2

DEFAULT_MAX_LEN = 65536
# A request with thousands of bad fields gets the first ones: enough to fix, small to send.
MAX_VIOLATIONS = 20

_Check = Callable[[Any, str, list[tuple[str, str]]], None]
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


@dataclass
class _Plan:
    """The compiled rules of one message type."""

    checks: dict[FieldDescriptor, _Check] = field(default_factory=dict)
    required: list[FieldDescriptor] = field(default_factory=list)
    exclusive: list[list[FieldDescriptor]] = field(default_factory=list)


_plans: dict[Descriptor, _Plan] = {}


def validate(message: Message) -> None:
    """Raise InvalidArgument (with every violation found, up to MAX_VIOLATIONS) when
    ``message`` breaks a rule; return None when it is valid."""
    out: list[tuple[str, str]] = []
    _check_message(message, "", out)
    if out:
        shown = out[:MAX_VIOLATIONS]
        text = "; ".join(f"{path}: {what}" for path, what in shown[:3])
        more = f" (and {len(out) - 3} more)" if len(out) > 3 else ""
        raise InvalidArgument(text + more, violations=shown)


def _plan_for(desc: Descriptor) -> _Plan:
    plan = _plans.get(desc)
    if plan is None:
        plan = _compile(desc)
        _plans[desc] = plan
    return plan


def _check_message(message: Message, prefix: str, out: list[tuple[str, str]]) -> None:
    # The hot path of a 100k-task SubmitJob: keyed by descriptor objects, no work for
    # rules a message type does not have.
    plan = _plans.get(message.DESCRIPTOR) or _plan_for(message.DESCRIPTOR)
    if plan.required:
        for fd in plan.required:
            if not _is_set(message, fd):
                out.append((prefix + fd.name, "required; set it"))
    if plan.exclusive:
        for group in plan.exclusive:
            present = [fd.name for fd in group if _is_set(message, fd)]
            if len(present) > 1:
                out.append((prefix + present[1], f"set at most one of {', '.join(fd.name for fd in group)}"))
    checks = plan.checks
    for fd, value in message.ListFields():
        check = checks.get(fd)
        if check is not None:
            check(value, prefix + fd.name, out)
    del out[MAX_VIOLATIONS:]


def _is_set(message: Message, fd: FieldDescriptor) -> bool:
    if fd.is_repeated:
        return len(getattr(message, fd.name)) > 0
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return message.HasField(fd.name)
    return bool(getattr(message, fd.name))


def _rules(fd: FieldDescriptor) -> rules_pb2.FieldRules:
    options = fd.GetOptions()
    if options.HasExtension(rules_pb2.rules):
        return options.Extensions[rules_pb2.rules]
    return rules_pb2.FieldRules()


def _compile(desc: Descriptor) -> _Plan:
    plan = _Plan()
    for fd in desc.fields:
        rules = _rules(fd)
        if rules.required:
            plan.required.append(fd)
        check = _field_check(fd, rules)
        if check is not None:
            plan.checks[fd] = check
    options = desc.GetOptions()
    if options.HasExtension(rules_pb2.message_rules):
        names = list(options.Extensions[rules_pb2.message_rules].at_most_one_of)
        if names:
            plan.exclusive.append([desc.fields_by_name[n] for n in names])
    return plan


def _field_check(fd: FieldDescriptor, rules: rules_pb2.FieldRules) -> _Check | None:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        return _map_check(fd, rules)
    element = _element_check(fd, rules)
    if not fd.is_repeated:
        return element
    max_items = rules.max_items

    def check_repeated(values: Any, path: str, out: list[tuple[str, str]]) -> None:
        if max_items and len(values) > max_items:
            out.append((path, f"at most {max_items} elements, got {len(values)}"))
            return
        if element is not None:
            for i, value in enumerate(values):
                element(value, f"{path}[{i}]", out)
                if len(out) >= MAX_VIOLATIONS:
                    return

    return check_repeated


def _map_check(fd: FieldDescriptor, rules: rules_pb2.FieldRules) -> _Check:
    value_fd = fd.message_type.fields_by_name["value"]
    value_check = _element_check(value_fd, rules)
    key_re = re.compile(rules.key_pattern) if rules.key_pattern else None
    max_items = rules.max_items

    def check_map(values: Any, path: str, out: list[tuple[str, str]]) -> None:
        if max_items and len(values) > max_items:
            out.append((path, f"at most {max_items} entries, got {len(values)}"))
            return
        for key, value in values.items():
            bad_key = len(key) > DEFAULT_MAX_LEN or (key_re is not None and not key_re.fullmatch(key))
            if isinstance(key, str) and bad_key:
                out.append((f"{path}[{quote(key)}]", f"key must match {rules.key_pattern or 'the length limit'}"))
                continue
            if value_check is not None:
                value_check(value, f"{path}[{quote(key)}]", out)

    return check_map


def _element_check(fd: FieldDescriptor, rules: rules_pb2.FieldRules) -> _Check | None:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.message_type.full_name.startswith("google.protobuf."):
            return None

        def check_nested(value: Message, path: str, out: list[tuple[str, str]]) -> None:
            _check_message(value, path + ".", out)

        return check_nested
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _string_check(rules)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return _bytes_check(rules)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _enum_check(fd)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return None
    return _number_check(fd, rules)


def _number_check(fd: FieldDescriptor, rules: rules_pb2.FieldRules) -> _Check | None:
    is_float = fd.type in _FLOATS
    low = rules.gte if rules.HasField("gte") else None
    high = rules.lte if rules.HasField("lte") else None
    int_high = rules.int_lte if rules.HasField("int_lte") else None
    if not is_float and low is None and high is None and int_high is None:
        return None

    def check_number(value: float, path: str, out: list[tuple[str, str]]) -> None:
        if is_float and not math.isfinite(value):
            out.append((path, f"must be a finite number, got {value}"))
        elif low is not None and value < low:
            out.append((path, f"must be at least {low:g}, got {value:g}"))
        elif high is not None and value > high:
            out.append((path, f"must be at most {high:g}, got {value:g}"))
        elif int_high is not None and value > int_high:
            out.append((path, f"must be at most {int_high}, got {value}"))

    return check_number


def _enum_check(fd: FieldDescriptor) -> _Check:
    known = frozenset(fd.enum_type.values_by_number)
    name = fd.enum_type.name

    def check_enum(value: int, path: str, out: list[tuple[str, str]]) -> None:
        if value not in known:
            out.append((path, f"{value} is not a value of {name}"))

    return check_enum


def _string_check(rules: rules_pb2.FieldRules) -> _Check:
    max_len = rules.max_len or DEFAULT_MAX_LEN
    charset = rules.charset
    pattern = re.compile(rules.pattern) if rules.pattern else None
    help_text = rules.pattern_help or f"the pattern {rules.pattern}"
    # A secret's value is never quoted back (it would reach the client, and the logs).
    shown: Callable[[str], str] = (lambda _value: REDACTED) if rules.secret else quote

    def check_string(value: str, path: str, out: list[tuple[str, str]]) -> None:
        if len(value) > max_len:
            out.append((path, f"at most {max_len} characters, got {len(value)}: {shown(value)}"))
        elif charset == rules_pb2.CHARSET_TEXT and "\x00" in value:
            out.append((path, f"must not contain NUL characters: {shown(value)}"))
        elif charset == rules_pb2.CHARSET_LINE and not value.isprintable():
            bad = next(c for c in value if not c.isprintable())
            out.append((path, f"must be printable text; U+{ord(bad):04X} is a control or format character"))
        elif pattern is not None and value and not pattern.fullmatch(value):
            out.append((path, f"{shown(value)} must be {help_text}"))

    return check_string


def _bytes_check(rules: rules_pb2.FieldRules) -> _Check | None:
    max_bytes = rules.max_bytes
    if not max_bytes:
        return None

    def check_bytes(value: bytes, path: str, out: list[tuple[str, str]]) -> None:
        if len(value) > max_bytes:
            out.append((path, f"at most {max_bytes} bytes, got {len(value)}"))

    return check_bytes
