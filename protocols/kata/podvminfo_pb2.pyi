from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ("PodName", "PodNamespace", "Wait")
    PODNAME_FIELD_NUMBER: _ClassVar[int]
    PODNAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    PodName: str
    PodNamespace: str
    Wait: bool
    def __init__(self, PodName: _Optional[str] = ..., PodNamespace: _Optional[str] = ..., Wait: _Optional[bool] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("VMID",)
    VMID_FIELD_NUMBER: _ClassVar[int]
    VMID: str
    def __init__(self, VMID: _Optional[str] = ...) -> None: ...
