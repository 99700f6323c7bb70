"""Generated protobuf modules, and a check that they still match their sources.

``profile_pb2`` is pprof's Profile message (proto/profile.proto) and ``capture_pb2`` is
the raw capture file's Record message (proto/capture.proto).  Both, with their ``.pyi``
type stubs, are written by scripts/gen_proto.sh; never edit them by hand.

:func:`source_schema` reads the messages and fields out of ``.proto`` text and
:func:`descriptor_schema` out of a generated module, in the same shape, so a test can
compare the two without needing protoc: a field added, renumbered or retyped in the
source but not regenerated shows up as a difference.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple


class FieldSchema(NamedTuple):
    number: int
    label: str   # "repeated", "optional" (proto3 explicit presence) or ""
    type: str    # scalar name ("uint64"), message name ("ValueType"), or "map<K,V>"
    oneof: str   # name of the (real) oneof holding the field, or ""


# message full name -> field name -> schema
Schema = dict[str, dict[str, FieldSchema]]

_TOKEN = re.compile(r'\s*(?:(//[^\n]*|/\*.*?\*/)|("(?:[^"\\]|\\.)*")|([A-Za-z_][\w.]*|\d+|\S))',
                    re.S)


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing white space is left
            break
        pos = m.end()
        if m.group(1) is None:
            out.append(m.group(2) or m.group(3))
    return out


class ProtoSyntaxError(ValueError):
    pass


def source_schema(text: str) -> Schema:
    """Messages and fields of proto3 source text (no enums, services or imports)."""
    toks = _tokens(text)
    schema: Schema = {}
    package = ""
    scopes: list[tuple[str, str]] = []  # ("message", full name) or ("oneof", name)
    i = 0

    def expect(tok: str) -> None:
        nonlocal i
        if i >= len(toks) or toks[i] != tok:
            got = toks[i] if i < len(toks) else "end of file"
            raise ProtoSyntaxError(f"expected {tok!r}, got {got!r}")
        i += 1

    def message_scope() -> str:
        for kind, name in reversed(scopes):
            if kind == "message":
                return name
        raise ProtoSyntaxError("field outside a message")

    while i < len(toks):
        tok = toks[i]
        if tok in ("syntax", "option", "reserved", "import", "edition"):
            while toks[i] != ";":
                i += 1
            i += 1
        elif tok == "package":
            package = toks[i + 1]
            i += 2
            expect(";")
        elif tok == "message":
            outer = message_scope() if scopes else package
            full = f"{outer}.{toks[i + 1]}" if outer else toks[i + 1]
            schema[full] = {}
            scopes.append(("message", full))
            i += 2
            expect("{")
        elif tok == "oneof":
            scopes.append(("oneof", toks[i + 1]))
            i += 2
            expect("{")
        elif tok == "}":
            if not scopes:
                raise ProtoSyntaxError("unbalanced '}'")
            scopes.pop()
            i += 1
        elif tok == ";":
            i += 1
        else:
            label = ""
            if tok in ("repeated", "optional"):
                label = tok
                i += 1
            if toks[i] == "map":
                i += 1
                expect("<")
                key = toks[i]
                i += 1
                expect(",")
                value = toks[i]
                i += 1
                expect(">")
                ftype = f"map<{key},{value}>"
            else:
                ftype = toks[i].rsplit(".", 1)[-1]
                i += 1
            name = toks[i]
            i += 1
            expect("=")
            if not toks[i].isdigit():
                raise ProtoSyntaxError(f"field {name}: number expected, got {toks[i]!r}")
            number = int(toks[i])
            i += 1
            if toks[i] == "[":
                while toks[i] != "]":
                    i += 1
                i += 1
            expect(";")
            oneof = scopes[-1][1] if scopes and scopes[-1][0] == "oneof" else ""
            schema[message_scope()][name] = FieldSchema(number, label, ftype, oneof)
    if scopes:
        raise ProtoSyntaxError(f"unclosed {scopes[-1][0]} {scopes[-1][1]}")
    return schema


_SCALARS = {
    1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64",
    7: "fixed32", 8: "bool", 9: "string", 12: "bytes", 13: "uint32", 15: "sfixed32",
    16: "sfixed64", 17: "sint32", 18: "sint64",
}
_TYPE_MESSAGE = 11
_TYPE_ENUM = 14


def _type_name(field: Any) -> str:
    if field.type in (_TYPE_MESSAGE, _TYPE_ENUM):
        target = field.message_type if field.type == _TYPE_MESSAGE else field.enum_type
        return str(target.name)
    return _SCALARS[field.type]


def _add_message(schema: Schema, desc: Any) -> None:
    fields: dict[str, FieldSchema] = {}
    for field in desc.fields:
        oneof = field.containing_oneof
        label, oneof_name = "", ""
        if oneof is not None and oneof.name == "_" + field.name and len(oneof.fields) == 1:
            label = "optional"  # proto3 `optional`: a synthetic one-field oneof
        elif oneof is not None:
            oneof_name = oneof.name
        ftype = _type_name(field)
        mtype = field.message_type
        if mtype is not None and mtype.GetOptions().map_entry:
            key, value = mtype.fields_by_name["key"], mtype.fields_by_name["value"]
            ftype = f"map<{_type_name(key)},{_type_name(value)}>"
        elif field.is_repeated:
            label = "repeated"
        fields[field.name] = FieldSchema(field.number, label, ftype, oneof_name)
    schema[desc.full_name] = fields
    for nested in desc.nested_types:
        if not nested.GetOptions().map_entry:
            _add_message(schema, nested)


def descriptor_schema(module: Any) -> Schema:
    """Messages and fields of a generated ``*_pb2`` module, shaped like source_schema."""
    schema: Schema = {}
    for desc in module.DESCRIPTOR.message_types_by_name.values():
        _add_message(schema, desc)
    return schema


def schema_differences(source: Schema, generated: Schema) -> list[str]:
    """Readable differences, empty when the generated module matches the source."""
    out: list[str] = []
    for msg in sorted(source.keys() | generated.keys()):
        if msg not in generated:
            out.append(f"message {msg}: in the .proto, not in the generated module")
            continue
        if msg not in source:
            out.append(f"message {msg}: in the generated module, not in the .proto")
            continue
        a, b = source[msg], generated[msg]
        out.extend(f"{msg}.{name}: .proto {a.get(name)} != generated {b.get(name)}"
                   for name in sorted(a.keys() | b.keys()) if a.get(name) != b.get(name))
    return out
