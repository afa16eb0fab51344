from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Charset(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHARSET_UNSPECIFIED: _ClassVar[Charset]
    CHARSET_TEXT: _ClassVar[Charset]
    CHARSET_LINE: _ClassVar[Charset]
CHARSET_UNSPECIFIED: Charset
CHARSET_TEXT: Charset
CHARSET_LINE: Charset
RULES_FIELD_NUMBER: _ClassVar[int]
rules: _descriptor.FieldDescriptor
MESSAGE_RULES_FIELD_NUMBER: _ClassVar[int]
message_rules: _descriptor.FieldDescriptor
METHOD_RULES_FIELD_NUMBER: _ClassVar[int]
method_rules: _descriptor.FieldDescriptor

class FieldRules(_message.Message):
    __slots__ = ("required", "gte", "lte", "int_lte", "max_len", "max_bytes", "max_items", "charset", "pattern", "key_pattern", "pattern_help", "secret")
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    INT_LTE_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_FIELD_NUMBER: _ClassVar[int]
    CHARSET_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    KEY_PATTERN_FIELD_NUMBER: _ClassVar[int]
    PATTERN_HELP_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    required: bool
    gte: float
    lte: float
    int_lte: int
    max_len: int
    max_bytes: int
    max_items: int
    charset: Charset
    pattern: str
    key_pattern: str
    pattern_help: str
    secret: bool
    def __init__(self, required: _Optional[bool] = ..., gte: _Optional[float] = ..., lte: _Optional[float] = ..., int_lte: _Optional[int] = ..., max_len: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_items: _Optional[int] = ..., charset: _Optional[_Union[Charset, str]] = ..., pattern: _Optional[str] = ..., key_pattern: _Optional[str] = ..., pattern_help: _Optional[str] = ..., secret: _Optional[bool] = ...) -> None: ...

class MessageRules(_message.Message):
    __slots__ = ("at_most_one_of",)
    AT_MOST_ONE_OF_FIELD_NUMBER: _ClassVar[int]
    at_most_one_of: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, at_most_one_of: _Optional[_Iterable[str]] = ...) -> None: ...

class MethodRules(_message.Message):
    __slots__ = ("replay_in_handler",)
    REPLAY_IN_HANDLER_FIELD_NUMBER: _ClassVar[int]
    replay_in_handler: bool
    def __init__(self, replay_in_handler: _Optional[bool] = ...) -> None: ...
