"""DWARF CFI reader: ``.eh_frame`` / ``.debug_frame`` -> format-neutral :class:`Rule`.

This is the fallback unwind table for ELF files without ``.sframe`` (today libc,
ld.so, libstdc++ and the vDSO).  profiler.unwind.elf reads the ELF container (header,
section table, section bytes); the CFI itself is decoded here, byte by byte, because
pyelftools' CFI decoder

* parses every entry of the section up front (0.4 s for the host libc, 0.6 s with
  the row tables) and has no public way to parse the single FDE found through
  ``.eh_frame_hdr``;
* does not track ``DW_CFA_AARCH64_negate_ra_state`` (it decodes and drops it);
* (0.33) scales ``DW_CFA_def_cfa_sf`` by the code, not the data, alignment factor;
  fails on ``DW_CFA_GNU_args_size`` when building a row table (a ``ValueError``
  from formatting its own error message; libc has such an FDE); rejects
  ``DW_CFA_GNU_negative_offset_extended`` and
  ``DW_CFA_AARCH64_negate_ra_state_with_pc``; asserts on FDE pointer encodings
  other than absptr/pcrel and on CIEs with an augmentation string but no ``R``;
  and loses letters such as ``S`` that follow one it does not know (``zRBS``:
  aarch64 B-key signal frame).

The package, bottom up:

* ``encoding``: fixed-size fields, ``DW_EH_PE_*`` pointers, CIE augmentations;
* ``entries``: CIE / FDE headers of one section and the index that finds a pc's FDE
  (``eh_frame_hdr``'s search table, or a one-time scan);
* ``constants``: the ``DW_CFA_*`` opcodes; ``row``: a row's state and its Rule;
* ``interpreter``: the call-frame instructions, one handler per opcode;
* ``table``: :class:`CfiTable`, the lookup API the unwinder uses.

Not supported (CfiError): relocatable objects, machines other than x86_64/aarch64,
FDE pointer encodings other than absolute/pc-relative, unknown CFA opcodes.  Files
without section headers (CFI reachable only through PT_GNU_EH_FRAME) give None.
"""

from __future__ import annotations

from .interpreter import MAX_CFI_INSTRUCTIONS
from .table import CfiError, CfiTable

# The last three are for the tests and the fuzzer, which build sections by hand.
__all__ = ["CfiError", "CfiTable", "MAX_CFI_INSTRUCTIONS"]
