"""``.eh_frame_hdr``: the sorted search table that finds an ``.eh_frame`` FDE by pc.

The linker writes it (``--eh-frame-hdr``): a version byte, the encodings of the
pointer to ``.eh_frame``, of the entry count and of the table, then pairs
(initial location, FDE address) sorted by location.  GNU ld writes the pairs as 4-byte
offsets from the header's address, read here in bulk; any other fixed-size encoding is
decoded pair by pair.  A table that cannot be used makes the section fall
back to the one-time scan of its entries.
"""

from __future__ import annotations

import sys
from array import array

from .encoding import (
    APPLICATION_MASK,
    FORMAT_MASK,
    Bad,
    DW_EH_PE_datarel,
    DW_EH_PE_indirect,
    DW_EH_PE_omit,
    DW_EH_PE_sdata2,
    DW_EH_PE_sdata4,
    DW_EH_PE_sdata8,
    DW_EH_PE_sleb128,
    DW_EH_PE_uleb128,
    Reader,
)
from .entries import Section

# The table encoding GNU ld writes: DW_EH_PE_datarel | DW_EH_PE_sdata4.
_DATAREL_SDATA4 = DW_EH_PE_datarel | DW_EH_PE_sdata4


def parse_eh_frame_hdr(hdr: bytes, hdr_addr: int,
                       eh: Section) -> tuple[list[int], list[int]] | None:
    """Decode .eh_frame_hdr's search table -> (starts, fde offsets) or None.

    None (caller falls back to a scan of .eh_frame) when the header has no table,
    uses an encoding we do not decode, points somewhere other than the .eh_frame
    section, or is not sorted.
    """
    if len(hdr) < 4 or hdr[0] != 1:
        return None
    ptr_enc, count_enc, table_enc = hdr[1], hdr[2], hdr[3]
    if count_enc == DW_EH_PE_omit or table_enc == DW_EH_PE_omit:
        return None
    view = Reader(hdr, hdr_addr, eh.addr_size, eh.little)
    try:
        eh_ptr, pos = view.encoded(ptr_enc, 4, len(hdr))
        count, pos = view.encoded(count_enc, pos, len(hdr))
    except Bad:
        return None
    if eh_ptr != eh.addr:
        return None
    if table_enc == _DATAREL_SDATA4:
        table = _datarel_sdata4_table(hdr, pos, count, hdr_addr, eh)
    else:
        table = _encoded_table(view, table_enc, pos, count)
    if table is None:
        return None
    starts, fdes = table
    offs = [a - eh.addr for a in fdes]
    if any(o < 0 or o >= eh.size for o in offs):
        return None
    if any(starts[i] > starts[i + 1] for i in range(len(starts) - 1)):
        return None
    return starts, offs


def _datarel_sdata4_table(hdr: bytes, pos: int, count: int, hdr_addr: int,
                          eh: Section) -> tuple[list[int], list[int]] | None:
    """The search table GNU ld writes, read in bulk: pairs of 4-byte offsets from
    the header's address."""
    nbytes = count * 8
    if pos + nbytes > len(hdr):
        return None
    raw = array("i")
    raw.frombytes(hdr[pos:pos + nbytes])
    if (sys.byteorder == "little") != eh.little:
        raw.byteswap()
    mask = eh.addr_mask
    return ([(hdr_addr + v) & mask for v in raw[0::2]],
            [(hdr_addr + v) & mask for v in raw[1::2]])


def _encoded_table(view: Reader, table_enc: int, pos: int,
                   count: int) -> tuple[list[int], list[int]] | None:
    """The search table in any other fixed-size encoding, absolute or data-relative."""
    app = table_enc & APPLICATION_MASK
    if app not in (0, DW_EH_PE_datarel) or table_enc & DW_EH_PE_indirect:
        return None
    fmt = table_enc & FORMAT_MASK
    if fmt in (DW_EH_PE_uleb128, DW_EH_PE_sleb128):
        return None
    starts: list[int] = []
    fdes: list[int] = []
    end = view.size
    mask = view.addr_mask
    sign = 1 << (8 * view.addr_size - 1)
    try:
        for _ in range(count):
            vals = []
            for _k in range(2):
                v, pos = view.encoded(fmt, pos, end, apply=False)
                # encoded() masked the value to the address size: re-sign it.
                if fmt in (DW_EH_PE_sdata2, DW_EH_PE_sdata4, DW_EH_PE_sdata8) and v & sign:
                    v -= sign << 1
                if app == DW_EH_PE_datarel:
                    v += view.addr
                vals.append(v & mask)
            starts.append(vals[0])
            fdes.append(vals[1])
    except Bad:
        return None
    return starts, fdes
