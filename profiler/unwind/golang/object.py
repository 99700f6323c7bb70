"""The Go side of an ELF object (a mixin of profiler.unwind.objfile.ObjectFile).

A Go 1.18+ executable describes its Go text in the runtime's own `.gopclntab`, kept
by stripped builds too: function ranges, and (profiler.unwind.golang.frames) unwind
rules and the frames where the runtime switched stacks.  Two return addresses are
planted by the runtime without a call: runtime.goexit + PCQuantum under every
goroutine, and runtime.systemstack_switch where cgocallback resumes the Go frames
that called into C.  The table is located and decoded on first use; the modules that
read it are imported then too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from profiler.unwind.elf import ElfFile

if TYPE_CHECKING:
    from profiler.unwind.golang.frames import GoFrames
    from profiler.unwind.golang.pclntab import GoFunc, Pclntab


class GoText:
    """.gopclntab lookups of an ELF object; ObjectFile supplies the file and its bytes."""

    elf: ElfFile
    name: str
    arch: str
    if TYPE_CHECKING:
        def read_code(self, vaddr: int, size: int) -> bytes: ...

    def _init_go(self) -> None:
        self._go_loaded = False
        self._go: GoFrames | None = None
        self.go_error: str | None = None
        self._go_specials: dict[str, GoFunc | None] = {}

    @property
    def go_frames(self) -> GoFrames | None:
        """Unwind rules from the .gopclntab of a Go 1.18+ executable, or None (the
        reason in `go_error` if the table is damaged)."""
        if not self._go_loaded:
            self._go_loaded = True
            from profiler.unwind.golang.frames import GoFrames
            from profiler.unwind.golang.locate import find_pclntab
            from profiler.unwind.golang.pclntab import GoPclnError
            try:
                table = find_pclntab(self.elf, self.name)
            except GoPclnError as exc:
                self.go_error = str(exc)
                table = None
            if table is not None:
                self._go = GoFrames(table, self.arch, self.read_code)
        return self._go

    @property
    def gopclntab(self) -> Pclntab | None:
        go = self.go_frames
        return None if go is None else go.table

    def go_function(self, vaddr: int) -> GoFunc | None:
        """The Go function (from .gopclntab) holding link-time `vaddr`, if any."""
        from profiler.unwind.golang.pclntab import GoPclnError
        table = self.gopclntab
        if table is None:
            return None
        try:
            return table.lookup(vaddr)
        except GoPclnError:
            return None

    def _go_special(self, funcid: str) -> GoFunc | None:
        """The runtime function with that funcID ("goexit"), found once by name."""
        if funcid in self._go_specials:
            return self._go_specials[funcid]
        from profiler.unwind.golang.pclntab import GoPclnError
        found = None
        table = self.gopclntab
        try:
            for name in (f"runtime.{funcid}", f"runtime.{funcid}.abi0"):
                fn = None if table is None else table.by_name(name)
                if fn is not None and table.funcid_name(fn.funcid) == funcid:  # type: ignore[union-attr]
                    found = fn
                    break
        except GoPclnError:
            pass
        self._go_specials[funcid] = found
        return found

    def go_stack_switch(self, vaddr: int) -> str:
        """profiler.unwind.golang.frames.GoFrames.stack_switch at link-time `vaddr` ("" for
        a file without Go text or a damaged table)."""
        from profiler.unwind.golang.pclntab import GoPclnError
        go = self.go_frames
        if go is None or not go.table.covers(vaddr):
            return ""
        try:
            return go.stack_switch(vaddr)
        except GoPclnError:
            return ""

    def designed_return(self, vaddr: int) -> bool:
        """Whether link-time `vaddr` is the return address the Go runtime gives every
        goroutine's outermost frame without a call: runtime.goexit + PCQuantum (the
        instruction after goexit's entry NOP).  A frame at it is goexit itself, an
        outermost frame (look it up at `vaddr`, or `vaddr` - 1: both are in goexit)."""
        fn = self._go_special("goexit")
        return fn is not None and vaddr == fn.entry + self.gopclntab.quantum  # type: ignore[union-attr]

    def go_switch_return(self, vaddr: int) -> bool:
        """Whether link-time `vaddr` is the pc the runtime saves for a goroutine that
        switched to the system stack (systemstack, asmcgocall): runtime.systemstack_switch
        at its entry (Go 1.19-1.20 amd64) or 8 bytes in (arm64, amd64 Go 1.21+).
        runtime.cgocallback plants it as its return address on the goroutine stack
        when C calls back into Go, so the chain continues into the Go frames that
        called C.  No call precedes it (or a dummy one), and the frame at it must be
        looked up at `vaddr` itself, not `vaddr` - 1 (which can be another function)."""
        fn = self._go_special("systemstack_switch")
        return fn is not None and vaddr in (fn.entry, fn.entry + 8)
