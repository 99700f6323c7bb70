"""Call-frame instruction opcodes (``DW_CFA_*``), by their names in the DWARF 5 spec.

The instructions are described in DWARF 5 section 6.4.2 and their encodings listed in
section 7.24 (Table 7.29).  Three "primary" opcodes keep an operand in the low six
bits of the opcode byte; their value here is the whole byte with a zero operand, and
``PRIMARY_MASK`` selects the opcode part.  The rest are whole bytes below 0x40.
Vendor opcodes are the GNU and AArch64 extensions that GCC, LLVM and hand-written
assembly in glibc emit.
"""

from __future__ import annotations

# The high two bits of a primary opcode; the low six bits are its operand.
PRIMARY_MASK = 0xC0
OPERAND_MASK = 0x3F

# Primary opcodes (6.4.2.1 / 6.4.2.3): high two bits 0x1, 0x2, 0x3.
DW_CFA_advance_loc = 0x40         # delta (low 6 bits) * code alignment factor
DW_CFA_offset = 0x80              # register (low 6 bits), ULEB128 factored offset
DW_CFA_restore = 0xC0             # register (low 6 bits)

# 6.4.2.4 and the others: opcodes with no operand in the opcode byte.
DW_CFA_nop = 0x00
DW_CFA_set_loc = 0x01             # address (an encoded pointer in .eh_frame)
DW_CFA_advance_loc1 = 0x02        # 1-byte delta
DW_CFA_advance_loc2 = 0x03        # 2-byte delta
DW_CFA_advance_loc4 = 0x04        # 4-byte delta
DW_CFA_offset_extended = 0x05     # ULEB128 register, ULEB128 factored offset
DW_CFA_restore_extended = 0x06    # ULEB128 register
DW_CFA_undefined = 0x07           # ULEB128 register
DW_CFA_same_value = 0x08          # ULEB128 register
DW_CFA_register = 0x09            # ULEB128 register, ULEB128 register
DW_CFA_remember_state = 0x0A
DW_CFA_restore_state = 0x0B
DW_CFA_def_cfa = 0x0C             # ULEB128 register, ULEB128 offset
DW_CFA_def_cfa_register = 0x0D    # ULEB128 register
DW_CFA_def_cfa_offset = 0x0E      # ULEB128 offset
DW_CFA_def_cfa_expression = 0x0F  # BLOCK
DW_CFA_expression = 0x10          # ULEB128 register, BLOCK
DW_CFA_offset_extended_sf = 0x11  # ULEB128 register, SLEB128 factored offset
DW_CFA_def_cfa_sf = 0x12          # ULEB128 register, SLEB128 factored offset
DW_CFA_def_cfa_offset_sf = 0x13   # SLEB128 factored offset
DW_CFA_val_offset = 0x14          # ULEB128 register, ULEB128 factored offset
DW_CFA_val_offset_sf = 0x15       # ULEB128 register, SLEB128 factored offset
DW_CFA_val_expression = 0x16      # ULEB128 register, BLOCK
DW_CFA_lo_user = 0x1C
DW_CFA_hi_user = 0x3F

# Vendor extensions (in the DW_CFA_lo_user..DW_CFA_hi_user range).
DW_CFA_MIPS_advance_loc8 = 0x1D                 # 8-byte delta
DW_CFA_AARCH64_negate_ra_state_with_pc = 0x2C   # AArch64 pac-ret+pc
DW_CFA_GNU_window_save = 0x2D                   # SPARC; on AArch64 it is ...
DW_CFA_AARCH64_negate_ra_state = 0x2D           # ... the RA-signed toggle
DW_CFA_GNU_args_size = 0x2E                     # ULEB128 size of outgoing arguments
DW_CFA_GNU_negative_offset_extended = 0x2F      # ULEB128 register, ULEB128 offset (negated)
