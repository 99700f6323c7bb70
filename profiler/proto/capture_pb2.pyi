from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Record(_message.Message):
    __slots__ = ("header", "maps", "sample", "memory", "file", "trailer", "samples", "kernel_symbols")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    maps: MapsSnapshot
    sample: Sample
    memory: MemoryBlob
    file: FileBlob
    trailer: Trailer
    samples: SampleBatch
    kernel_symbols: KernelSymbols
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., maps: _Optional[_Union[MapsSnapshot, _Mapping]] = ..., sample: _Optional[_Union[Sample, _Mapping]] = ..., memory: _Optional[_Union[MemoryBlob, _Mapping]] = ..., file: _Optional[_Union[FileBlob, _Mapping]] = ..., trailer: _Optional[_Union[Trailer, _Mapping]] = ..., samples: _Optional[_Union[SampleBatch, _Mapping]] = ..., kernel_symbols: _Optional[_Union[KernelSymbols, _Mapping]] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("version", "arch", "hostname", "kernel_release", "start_time_ns", "frequency_hz", "period_ns", "pac_mask", "pids", "command", "stack_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_HZ_FIELD_NUMBER: _ClassVar[int]
    PERIOD_NS_FIELD_NUMBER: _ClassVar[int]
    PAC_MASK_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    STACK_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    arch: str
    hostname: str
    kernel_release: str
    start_time_ns: int
    frequency_hz: int
    period_ns: int
    pac_mask: int
    pids: _containers.RepeatedScalarFieldContainer[int]
    command: _containers.RepeatedScalarFieldContainer[str]
    stack_bytes: int
    def __init__(self, version: _Optional[int] = ..., arch: _Optional[str] = ..., hostname: _Optional[str] = ..., kernel_release: _Optional[str] = ..., start_time_ns: _Optional[int] = ..., frequency_hz: _Optional[int] = ..., period_ns: _Optional[int] = ..., pac_mask: _Optional[int] = ..., pids: _Optional[_Iterable[int]] = ..., command: _Optional[_Iterable[str]] = ..., stack_bytes: _Optional[int] = ...) -> None: ...

class FileIdentity(_message.Message):
    __slots__ = ("build_id", "dev", "inode", "size")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    DEV_FIELD_NUMBER: _ClassVar[int]
    INODE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    dev: int
    inode: int
    size: int
    def __init__(self, build_id: _Optional[str] = ..., dev: _Optional[int] = ..., inode: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class MapEntry(_message.Message):
    __slots__ = ("start", "end", "offset", "perms", "path", "identity")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PERMS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    offset: int
    perms: str
    path: str
    identity: FileIdentity
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., offset: _Optional[int] = ..., perms: _Optional[str] = ..., path: _Optional[str] = ..., identity: _Optional[_Union[FileIdentity, _Mapping]] = ...) -> None: ...

class MapsSnapshot(_message.Message):
    __slots__ = ("pid", "time_ns", "mappings")
    PID_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    MAPPINGS_FIELD_NUMBER: _ClassVar[int]
    pid: int
    time_ns: int
    mappings: _containers.RepeatedCompositeFieldContainer[MapEntry]
    def __init__(self, pid: _Optional[int] = ..., time_ns: _Optional[int] = ..., mappings: _Optional[_Iterable[_Union[MapEntry, _Mapping]]] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("pid", "tid", "cpu", "time_ns", "comm", "regs", "stack_base", "stack", "kernel_stack")
    class RegsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    COMM_FIELD_NUMBER: _ClassVar[int]
    REGS_FIELD_NUMBER: _ClassVar[int]
    STACK_BASE_FIELD_NUMBER: _ClassVar[int]
    STACK_FIELD_NUMBER: _ClassVar[int]
    KERNEL_STACK_FIELD_NUMBER: _ClassVar[int]
    pid: int
    tid: int
    cpu: int
    time_ns: int
    comm: str
    regs: _containers.ScalarMap[str, int]
    stack_base: int
    stack: bytes
    kernel_stack: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, pid: _Optional[int] = ..., tid: _Optional[int] = ..., cpu: _Optional[int] = ..., time_ns: _Optional[int] = ..., comm: _Optional[str] = ..., regs: _Optional[_Mapping[str, int]] = ..., stack_base: _Optional[int] = ..., stack: _Optional[bytes] = ..., kernel_stack: _Optional[_Iterable[int]] = ...) -> None: ...

class SampleBatch(_message.Message):
    __slots__ = ("count", "packed")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    count: int
    packed: bytes
    def __init__(self, count: _Optional[int] = ..., packed: _Optional[bytes] = ...) -> None: ...

class KernelSymbols(_message.Message):
    __slots__ = ("pcs", "names", "offsets")
    PCS_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    pcs: _containers.RepeatedScalarFieldContainer[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    offsets: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, pcs: _Optional[_Iterable[int]] = ..., names: _Optional[_Iterable[str]] = ..., offsets: _Optional[_Iterable[int]] = ...) -> None: ...

class MemoryBlob(_message.Message):
    __slots__ = ("pid", "start", "data", "name")
    PID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    pid: int
    start: int
    data: bytes
    name: str
    def __init__(self, pid: _Optional[int] = ..., start: _Optional[int] = ..., data: _Optional[bytes] = ..., name: _Optional[str] = ...) -> None: ...

class FileBlob(_message.Message):
    __slots__ = ("path", "identity", "data")
    PATH_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    path: str
    identity: FileIdentity
    data: bytes
    def __init__(self, path: _Optional[str] = ..., identity: _Optional[_Union[FileIdentity, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Trailer(_message.Message):
    __slots__ = ("lost_samples", "samples", "end_time_ns")
    LOST_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    END_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    lost_samples: int
    samples: int
    end_time_ns: int
    def __init__(self, lost_samples: _Optional[int] = ..., samples: _Optional[int] = ..., end_time_ns: _Optional[int] = ...) -> None: ...
