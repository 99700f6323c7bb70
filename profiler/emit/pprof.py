"""pprof output: a :class:`ProfileData` as a gzip'd ``perftools.profiles.Profile``.

The builder interns everything pprof stores by reference -- strings, mappings,
functions, locations -- and hands out dense 1-based ids in table order, which is what
the strictest consumers demand (Parca rejects any other id, Pyroscope indexes by
``id - 1``).  Callers never see an index.

Shape of the output (docs/peers section 10):

* ``sample_type = [samples/count, cpu/nanoseconds]``, ``period_type = cpu/nanoseconds``,
  ``period``, ``time_nanos`` and ``duration_nanos`` from the ProfileData;
* per sample, labels ``pid`` and ``tid`` (numbers), ``thread``, ``process`` (when known),
  ``unwind`` = ``reliable``/``unreliable`` and, for unreliable stacks, ``unwind_reason``
  and ``unwind_doubt_frame`` (how many user frames, from the leaf, come before the
  synthetic ``[unreliable: REASON]`` frame, which stands where the doubt begins), then
  the profile's own labels (``ProfileData.labels``: the agent's host, service, ...);
* locations keep runtime addresses inside their mapping; mappings carry the build ID and
  file offset, and ``has_functions`` is set only when every location of the mapping
  has a function name, so pprof symbolizes the rest itself;
* kernel frames live in a ``[kernel.kallsyms]`` mapping (pprof has no kernel flag);
* synthetic frames (``[unreliable: stack-truncated]``) have address 0, no mapping and
  one line naming them;
* a frame with no function name has no line, so pprof shows (or resolves) its address.

:func:`check_valid` enforces pprof's own ``CheckValid`` rules plus the stricter ones of
Parca and Pyroscope; :func:`write_pprof` runs it on everything it writes.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterable
from typing import BinaryIO

from profiler.emit import KERNEL_MAPPING, doubt_frame
from profiler.model import Location, MappingInfo, ProfileData
from profiler.proto import profile_pb2

# (start, limit, offset, path, build_id): one pprof Mapping.  MappingInfo.has_functions
# is left out of the key: it is recomputed from the locations.
_MappingKey = tuple[int, int, int, str, str]
_LocationKey = tuple[_MappingKey | None, int, bool, str]

MAX_PROBLEMS_SHOWN = 10


class InvalidProfileError(ValueError):
    """A Profile message breaks a rule of pprof or of a pprof consumer."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        super().__init__(f"invalid pprof profile: {shown}"
                         + (f" (and {more} more)" if more > 0 else ""))


def write_pprof(data: ProfileData, path_or_file: str | os.PathLike[str] | BinaryIO) -> None:
    """Write `data` as a gzip-compressed pprof profile to a path or a binary file."""
    raw = build_profile(data).SerializeToString(deterministic=True)
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "wb") as out:
            _write_gzip(out, raw)
    else:
        _write_gzip(path_or_file, raw)


def _write_gzip(out: BinaryIO, raw: bytes) -> None:
    # No file name and mtime 0 in the gzip header: the same profile, the same bytes.
    with gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw)


def build_profile(data: ProfileData) -> profile_pb2.Profile:
    """The Profile message for `data`, checked with :func:`check_valid`."""
    profile = _Builder(data).build()
    check_valid(profile)
    return profile


class _Builder:
    def __init__(self, data: ProfileData) -> None:
        self.data = data
        self.profile = profile_pb2.Profile()
        self.strings: dict[str, int] = {}
        self.string("")
        self.mapping_ids: dict[_MappingKey, int] = {}
        self.function_ids: dict[tuple[str, str], int] = {}
        self.location_ids: dict[_LocationKey, int] = {}
        self.kernel_fallback: MappingInfo | None = self._kernel_fallback()
        # Locations and mappings are shared objects (the resolver hands out one per
        # pc and one per mapping): what is derived from one is kept by its id() for
        # the build (they all live in `data` until then).
        self._by_loc: dict[int, int] = {}
        self._by_info: dict[int, tuple[_MappingKey, bool]] = {}

    def string(self, s: str) -> int:
        idx = self.strings.get(s)
        if idx is None:
            idx = self.strings[s] = len(self.profile.string_table)
            self.profile.string_table.append(s)
        return idx

    def build(self) -> profile_pb2.Profile:
        p = self.profile
        for type_, unit in (("samples", "count"), ("cpu", "nanoseconds")):
            p.sample_type.add(type=self.string(type_), unit=self.string(unit))
        p.period_type.type = self.string("cpu")
        p.period_type.unit = self.string("nanoseconds")
        p.period = self.data.period_ns
        p.time_nanos = self.data.start_ns
        p.duration_nanos = self.data.duration_ns
        if not self.data.labels:
            self._add_comments()
        self._add_mappings()
        by_loc = self._by_loc
        for stack in self.data.samples:
            sample = p.sample.add()
            sample.location_id.extend([by_loc.get(id(loc)) or self._location(loc)
                                       for loc in stack.locations])
            sample.value.extend((stack.count, stack.cpu_ns))
            self._num_label(sample, "pid", stack.pid)
            self._num_label(sample, "tid", stack.tid)
            if stack.thread_name:
                self._str_label(sample, "thread", stack.thread_name)
            if stack.process_name:
                self._str_label(sample, "process", stack.process_name)
            self._str_label(sample, "unwind", "reliable" if stack.reliable else "unreliable")
            if not stack.reliable:
                self._str_label(sample, "unwind_reason", stack.reason or "unknown")
                self._num_label(sample, "unwind_doubt_frame", doubt_frame(stack))
        if self.data.labels:
            # A labelled (agent) profile interns its labels, then its comments, after
            # everything else: the string table order the agent has always written.
            self._add_profile_labels()
            self._add_comments()
        return p

    def _add_comments(self) -> None:
        self.profile.comment.extend(self.string(c) for c in self.data.comments)

    def _add_profile_labels(self) -> None:
        """Every label of ``data.labels`` on every sample that lacks its key."""
        pairs = [(self.string(k), self.string(v)) for k, v in self.data.labels.items()
                 if v and k != "pid"]
        for sample in self.profile.sample:
            have = {lab.key for lab in sample.label}
            for k, v in pairs:
                if k not in have:
                    sample.label.add(key=k, str=v)

    def _num_label(self, sample: profile_pb2.Sample, key: str, value: int) -> None:
        sample.label.add(key=self.string(key), num=value)

    def _str_label(self, sample: profile_pb2.Sample, key: str, value: str) -> None:
        sample.label.add(key=self.string(key), str=self.string(value))

    # -- mappings -------------------------------------------------------------------

    def _kernel_fallback(self) -> MappingInfo | None:
        """A [kernel.kallsyms] mapping for kernel frames that came without one."""
        addrs = [loc.address for loc in self._real_locations()
                 if loc.is_kernel and loc.mapping is None]
        if not addrs:
            return None
        return MappingInfo(min(addrs), max(addrs) + 1, 0, KERNEL_MAPPING)

    def _real_locations(self) -> Iterable[Location]:
        for stack in self.data.samples:
            for loc in stack.locations:
                if not loc.synthetic:
                    yield loc

    def mapping_of(self, loc: Location) -> MappingInfo | None:
        if loc.synthetic:
            return None
        if loc.mapping is None and loc.is_kernel:
            return self.kernel_fallback
        return loc.mapping

    def _add_mappings(self) -> None:
        """Add every mapping, the likely main binary first (pprof treats mapping 1 so).

        The main binary is the executable (a file that is not a shared object) holding
        the outermost user frame of most samples -- ``_start`` lives there, while
        threads end in libc's ``clone3``.  Without one, the first executable used wins.
        The others follow in order of first use, user objects before kernel ones.
        """
        infos: dict[_MappingKey, MappingInfo] = {}
        named: dict[_MappingKey, bool] = {}
        kernel: set[_MappingKey] = set()
        root_weight: dict[_MappingKey, int] = {}
        # Each location object once (stacks share them): its mapping's key, whether
        # that may be the executable, whether it is a kernel frame; None if synthetic.
        seen: dict[int, tuple[_MappingKey, bool, bool] | None] = {}
        for stack in self.data.samples:
            for loc in stack.locations:
                if id(loc) in seen:
                    continue
                info = self.mapping_of(loc)
                if info is None:
                    seen[id(loc)] = None
                    continue
                key, executable = self._info(info)
                seen[id(loc)] = (key, executable, loc.is_kernel)
                infos.setdefault(key, info)
                if not loc.function:
                    named[key] = False
                else:
                    named.setdefault(key, True)
                if loc.is_kernel:
                    kernel.add(key)
                elif executable:
                    root_weight.setdefault(key, 0)
            # the outermost user frame's mapping, if it may be the executable
            for loc in reversed(stack.locations):
                found = seen[id(loc)]
                if found is not None and not found[2]:
                    if found[1]:
                        root_weight[found[0]] += stack.count
                    break
        order = [k for k in infos if k not in kernel] + [k for k in infos if k in kernel]
        if root_weight:
            main = max(root_weight, key=lambda k: root_weight[k])  # first of equals
            order.remove(main)
            order.insert(0, main)
        for key in order:
            start, limit, offset, path, build_id = key
            self.mapping_ids[key] = len(self.profile.mapping) + 1
            self.profile.mapping.add(
                id=self.mapping_ids[key], memory_start=start, memory_limit=limit,
                file_offset=offset, filename=self.string(path),
                build_id=self.string(build_id), has_functions=named[key])

    # -- functions and locations ----------------------------------------------------

    def _function(self, name: str, filename: str = "") -> int:
        key = (name, filename)
        fid = self.function_ids.get(key)
        if fid is None:
            fid = self.function_ids[key] = len(self.profile.function) + 1
            self.profile.function.add(id=fid, name=self.string(name),
                                      system_name=self.string(name),
                                      filename=self.string(filename))
        return fid

    def _info(self, info: MappingInfo) -> tuple[_MappingKey, bool]:
        """The mapping's key, and whether it may be the executable."""
        known = self._by_info.get(id(info))
        if known is None:
            known = self._by_info[id(info)] = (_mapping_key(info),
                                               _may_be_executable(info.path))
        return known

    def _location(self, loc: Location) -> int:
        info = self.mapping_of(loc)
        mkey = None if info is None else self._info(info)[0]
        address = 0 if loc.synthetic else loc.address
        key: _LocationKey = (mkey, address, loc.is_kernel, loc.function)
        lid = self.location_ids.get(key)
        if lid is None:
            lid = self.location_ids[key] = len(self.profile.location) + 1
            new = self.profile.location.add(
                id=lid, mapping_id=0 if mkey is None else self.mapping_ids[mkey],
                address=address)
            if loc.function:
                new.line.add(function_id=self._function(loc.function))
        self._by_loc[id(loc)] = lid
        return lid


_SHARED_OBJECT = re.compile(r"\.so(\.[\d.]+)?$")


def _may_be_executable(path: str) -> bool:
    """False for pseudo objects ("[vdso]") and files named like shared objects."""
    return bool(path) and not path.startswith("[") and not _SHARED_OBJECT.search(path)


def _mapping_key(info: MappingInfo) -> _MappingKey:
    return (info.start, info.limit, info.offset, info.path, info.build_id)


# -- validation ---------------------------------------------------------------------


def check_valid(profile: profile_pb2.Profile) -> None:
    """Raise :class:`InvalidProfileError` unless `profile` keeps every rule of
    docs/peers section 10: what pprof's ``CheckValid`` and decoder enforce, plus the
    stricter rules of Parca (ids == position + 1) and Pyroscope."""
    problems = find_problems(profile)
    if problems:
        raise InvalidProfileError(problems)


def find_problems(profile: profile_pb2.Profile) -> list[str]:
    """Every broken rule of :func:`check_valid`, as readable lines."""
    out: list[str] = []
    table = profile.string_table
    nstrings = len(table)

    def string(where: str, idx: int) -> str:
        if not 0 <= idx < nstrings:
            out.append(f"{where}: string index {idx} outside the table of {nstrings}")
            return ""
        return str(table[idx])

    if not table or table[0] != "":
        out.append('string_table[0] must be ""')
    if len(set(table)) != nstrings:
        out.append("string_table has duplicates")

    for i, vt in enumerate(profile.sample_type):
        string(f"sample_type[{i}].type", vt.type)
        string(f"sample_type[{i}].unit", vt.unit)
    string("period_type.type", profile.period_type.type)
    string("period_type.unit", profile.period_type.unit)
    for i, c in enumerate(profile.comment):
        string(f"comment[{i}]", c)
    for name in ("drop_frames", "keep_frames", "doc_url"):
        string(name, getattr(profile, name))
    if profile.default_sample_type:
        default = string("default_sample_type", profile.default_sample_type)
        if default not in {table[vt.type] for vt in profile.sample_type
                           if 0 <= vt.type < nstrings}:
            out.append(f"default_sample_type {default!r} names no sample_type")
    if profile.sample and not profile.sample_type:
        out.append("samples but no sample_type")

    for kind, items in (("mapping", profile.mapping), ("location", profile.location),
                        ("function", profile.function)):
        for pos, item in enumerate(items):
            if item.id != pos + 1:
                out.append(f"{kind}[{pos}].id is {item.id}, must be {pos + 1} "
                           "(dense, 1-based, in table order)")

    nmap, nloc, nfunc = len(profile.mapping), len(profile.location), len(profile.function)
    for m in profile.mapping:
        where = f"mapping {m.id}"
        string(f"{where} filename", m.filename)
        string(f"{where} build_id", m.build_id)
        if m.memory_limit <= m.memory_start:
            out.append(f"{where}: empty range [{m.memory_start:#x}, {m.memory_limit:#x})")

    for f in profile.function:
        for name in ("name", "system_name", "filename"):
            string(f"function {f.id} {name}", getattr(f, name))

    for loc in profile.location:
        where = f"location {loc.id}"
        if not 0 <= loc.mapping_id <= nmap:
            out.append(f"{where}: mapping_id {loc.mapping_id} does not exist")
        elif loc.mapping_id:
            m = profile.mapping[loc.mapping_id - 1]
            if not m.memory_start <= loc.address < m.memory_limit:
                out.append(f"{where}: address {loc.address:#x} outside mapping {m.id} "
                           f"[{m.memory_start:#x}, {m.memory_limit:#x})")
            if m.has_functions and not loc.line:
                out.append(f"{where}: no function, but mapping {m.id} has_functions")
            for line in loc.line:
                if 0 < line.function_id <= nfunc:
                    fn = profile.function[line.function_id - 1]
                    if m.has_filenames and not fn.filename:
                        out.append(f"{where}: no file name, but mapping {m.id} "
                                   "has_filenames")
                if m.has_line_numbers and not line.line:
                    out.append(f"{where}: no line number, but mapping {m.id} "
                               "has_line_numbers")
        out.extend(f"{where}: function_id {line.function_id} does not exist"
                   for line in loc.line if not 0 < line.function_id <= nfunc)

    nvalues = len(profile.sample_type)
    reserved = {i for i, text in enumerate(table) if text.startswith("pprof::")}
    for i, s in enumerate(profile.sample):
        # The common case, every rule kept, is checked without building messages.
        labels = s.label
        ids = s.location_id
        fields = [(label.key, label.str, label.num, label.num_unit) for label in labels]
        keys_seen = {f[0] for f in fields}
        if (len(s.value) == nvalues and len(keys_seen) == len(fields)
                and (not ids or (min(ids) > 0 and max(ids) <= nloc))
                and not keys_seen & reserved and (not keys_seen or min(keys_seen) > 0)
                and all(key < nstrings and 0 <= text < nstrings and 0 <= unit < nstrings
                        and not (text and (num or unit))
                        for key, text, num, unit in fields)):
            continue
        where = f"sample {i}"
        if len(s.value) != nvalues:
            out.append(f"{where}: {len(s.value)} values for {nvalues} sample types")
        out.extend(f"{where}: location_id {lid} does not exist"
                   for lid in s.location_id if not 0 < lid <= nloc)
        keys: set[str] = set()
        for label in labels:
            key = string(f"{where} label key", label.key)
            if label.key == 0:
                out.append(f"{where}: label with key 0")
            if key.startswith("pprof::"):
                out.append(f"{where}: label key {key!r} is reserved")
            if key in keys:
                out.append(f"{where}: label {key!r} repeated")
            keys.add(key)
            string(f"{where} label {key!r} str", label.str)
            string(f"{where} label {key!r} num_unit", label.num_unit)
            if label.str and (label.num or label.num_unit):
                out.append(f"{where}: label {key!r} has both str and num")
    return out
