"""The struct layouts a compiled BPF object's BTF describes, and where user space's ctypes
mirrors of them (``maps``) differ: what the object was compiled with is the truth the kernel
checks map values and ring buffer records against.

A reader of the ELF ``.BTF`` section as the kernel documents it (Documentation/bpf/btf.rst):
enough for structs, arrays, integers and the qualifiers between them. Standard library only:
bpf/build.py loads this file by its path, before the package is installed.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from pathlib import Path

BTF_MAGIC = 0xEB9F
# Kinds (btf.rst, "BTF Type Encoding") and the bytes each appends after its 12-byte header:
# a fixed size, or per member (vlen of them).
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
FIXED_EXTRA = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
PER_MEMBER = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
QUALIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}
POINTER_SIZE = 8  # BPF is a 64-bit target


class BTFError(Exception):
    """The object has no BTF, or BTF this reader cannot follow."""


@dataclass(frozen=True)
class Type:
    kind: int
    name: str
    size_or_type: int  # a size for INT/STRUCT/UNION/ENUM/DATASEC, else the type referred to
    kind_flag: bool
    extra: tuple  # INT: (encoding,); ARRAY: (type, index type, count); VAR: (linkage,)
    members: tuple  # STRUCT/UNION: (name, type, bit offset), DATASEC: (type, offset, size)


# (member name, byte offset, byte size), as both sides are compared.
Layout = list[tuple[str, int, int]]


def elf_section(path: Path, wanted: str) -> bytes:
    """The contents of section ``wanted`` of a little-endian ELF64 file (a BPF object)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BTFError(f"{path} is not a little-endian ELF64 object")
    shoff, shentsize, shnum, shstrndx = (
        struct.unpack_from("<Q", data, 0x28)[0],
        *struct.unpack_from("<HHH", data, 0x3A),
    )
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    for name_off, _type, _flags, _addr, offset, size, *_ in headers:
        end = data.index(b"\0", names_at + name_off)
        if data[names_at + name_off : end].decode() == wanted:
            return data[offset : offset + size]
    raise BTFError(f"{path} has no {wanted} section (compiled without -g?)")


def parse(blob: bytes) -> dict[int, Type]:
    """The types of a ``.BTF`` section by id (id 0 is void, not listed)."""
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
    if magic != BTF_MAGIC:
        raise BTFError(f"bad BTF magic {magic:#x}")
    type_off, type_len, str_off, _str_len = struct.unpack_from("<IIII", blob, 8)
    strings = hdr_len + str_off

    def text(offset: int) -> str:
        start = strings + offset
        return blob[start : blob.index(b"\0", start)].decode()

    types: dict[int, Type] = {}
    at, end = hdr_len + type_off, hdr_len + type_off + type_len
    while at < end:
        name_off, info, size_or_type = struct.unpack_from("<III", blob, at)
        kind, vlen, kind_flag = info >> 24 & 0x1F, info & 0xFFFF, bool(info >> 31)
        at += 12
        extra: tuple = ()
        members: tuple = ()
        if kind in FIXED_EXTRA:
            count = FIXED_EXTRA[kind] // 4
            extra = struct.unpack_from(f"<{count}I", blob, at)
            at += FIXED_EXTRA[kind]
        elif kind in (STRUCT, UNION):
            members = tuple(
                (text(m_name), m_type, m_offset)
                for m_name, m_type, m_offset in struct.iter_unpack(
                    "<III", blob[at : at + 12 * vlen]
                )
            )
            at += 12 * vlen
        elif kind == DATASEC:
            members = tuple(struct.iter_unpack("<III", blob[at : at + 12 * vlen]))
            at += 12 * vlen
        elif kind in PER_MEMBER:
            at += PER_MEMBER[kind] * vlen
        elif kind not in (PTR, FWD, FUNC, FLOAT, *QUALIFIERS):
            raise BTFError(f"unknown BTF kind {kind}")
        types[len(types) + 1] = Type(kind, text(name_off), size_or_type, kind_flag, extra, members)
    return types


class ObjectTypes:
    """The BTF of one compiled object, asked for layouts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.types = parse(elf_section(path, ".BTF"))

    def named(self, kind: int, name: str) -> int:
        found = [i for i, t in self.types.items() if t.kind == kind and t.name == name]
        if not found:
            raise BTFError(f"{self.path}'s BTF has no {name}")
        return found[0]

    def resolved(self, type_id: int) -> int:
        """Through typedefs and qualifiers to the type that has a layout."""
        while type_id and self.types[type_id].kind in QUALIFIERS | {VAR}:
            type_id = self.types[type_id].size_or_type
        return type_id

    def size(self, type_id: int) -> int:
        t = self.types[self.resolved(type_id)]
        if t.kind == PTR:
            return POINTER_SIZE
        if t.kind == ARRAY:
            element, _index, count = t.extra
            return count * self.size(element)
        return t.size_or_type

    def layout(self, type_id: int) -> tuple[int, Layout]:
        """A struct's size and its members (a bitfield member is refused: none is mirrored)."""
        t = self.types[self.resolved(type_id)]
        if t.kind != STRUCT:
            raise BTFError(f"{self.path}: type {type_id} is not a struct")
        members = []
        for name, member_type, bits in t.members:
            if t.kind_flag and bits >> 24:
                raise BTFError(f"{self.path}: {t.name or 'struct'}.{name} is a bitfield")
            if bits % 8:
                raise BTFError(f"{self.path}: {t.name or 'struct'}.{name} is not byte-aligned")
            members.append((name, bits // 8, self.size(member_type)))
        return t.size_or_type, members

    def map_types(self, name: str) -> tuple[int, int]:
        """A ``.maps`` definition's key and value type ids (its ``__type(key/value, …)``)."""
        definition = self.types[self.resolved(self.named(VAR, name))]
        kinds = {m: self.types[t].size_or_type for m, t, _ in definition.members if m != "type"}
        if "key" not in kinds or "value" not in kinds:
            raise BTFError(f"{self.path}: map {name} declares no key or value type")
        return kinds["key"], kinds["value"]


def ctypes_layout(mirror: type[ctypes.Structure]) -> tuple[int, Layout]:
    return ctypes.sizeof(mirror), [
        (name, getattr(mirror, name).offset, getattr(mirror, name).size)
        for name, *_ in mirror._fields_
    ]


def _member(member: tuple[str, int, int]) -> str:
    name, offset, size = member
    return f"{name} at {offset} ({size} bytes)"


def drift(
    path: Path,
    structs: dict[str, type[ctypes.Structure]],
    variables: dict[str, type[ctypes.Structure]],
    maps: dict[str, tuple[type, type]],
) -> list[str]:
    """Where the ctypes mirrors differ from the object's BTF, one line each (none: in step).
    ``structs`` by C struct name, ``variables`` by the global's name (anonymous structs),
    ``maps`` by map name: (key, value) ctypes types, compared by size."""
    btf = ObjectTypes(path)
    wanted = [(f"struct {n}", btf.named(STRUCT, n), m) for n, m in structs.items()]
    wanted += [(f"{n} (a global)", btf.named(VAR, n), m) for n, m in variables.items()]
    problems = []
    for what, type_id, mirror in wanted:
        (size, members), (our_size, ours) = btf.layout(type_id), ctypes_layout(mirror)
        if members != ours:
            theirs_only = ", ".join(_member(m) for m in members if m not in ours) or "nothing more"
            ours_only = ", ".join(_member(m) for m in ours if m not in members) or "nothing more"
            problems.append(
                f"{what}: the object has {theirs_only}; {mirror.__name__} has {ours_only}"
            )
        elif size != our_size:
            problems.append(f"{what}: {size} bytes in the object, {our_size} in {mirror.__name__}")
    for name, (key, value) in maps.items():
        key_id, value_id = btf.map_types(name)
        theirs = (btf.size(key_id), btf.size(value_id))
        if theirs != (ctypes.sizeof(key), ctypes.sizeof(value)):
            problems.append(
                f"map {name}: key and value of {theirs} bytes in the object, "
                f"{(ctypes.sizeof(key), ctypes.sizeof(value))} in user space"
            )
    return problems
