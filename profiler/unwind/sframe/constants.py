"""SFrame constants, named after binutils' include/sframe.h (versions 1, 2 and 3)."""

from __future__ import annotations

SFRAME_MAGIC = 0xDEE2

SFRAME_VERSION_1 = 1
SFRAME_VERSION_2 = 2
SFRAME_VERSION_3 = 3

SFRAME_F_FDE_SORTED = 0x1
SFRAME_F_FRAME_POINTER = 0x2
SFRAME_F_FDE_FUNC_START_PCREL = 0x4

# Flag bits each version may carry; anything else is a corrupt or unknown section.
VALID_FLAGS = {
    SFRAME_VERSION_1: SFRAME_F_FDE_SORTED | SFRAME_F_FRAME_POINTER,
    SFRAME_VERSION_2: SFRAME_F_FDE_SORTED | SFRAME_F_FRAME_POINTER | SFRAME_F_FDE_FUNC_START_PCREL,
    SFRAME_VERSION_3: SFRAME_F_FDE_SORTED | SFRAME_F_FDE_FUNC_START_PCREL,
}

SFRAME_ABI_AARCH64_ENDIAN_BIG = 1
SFRAME_ABI_AARCH64_ENDIAN_LITTLE = 2
SFRAME_ABI_AMD64_ENDIAN_LITTLE = 3
SFRAME_ABI_S390X_ENDIAN_BIG = 4

ABI_NAMES = {
    SFRAME_ABI_AARCH64_ENDIAN_BIG: "aarch64-be",
    SFRAME_ABI_AARCH64_ENDIAN_LITTLE: "aarch64",
    SFRAME_ABI_AMD64_ENDIAN_LITTLE: "x86_64",
    SFRAME_ABI_S390X_ENDIAN_BIG: "s390x",
}

SFRAME_HEADER_SIZE = 28

# FDE entry sizes: V1 and V2 FDEs, V3 FDE index entries.
FDE_SIZE = {SFRAME_VERSION_1: 17, SFRAME_VERSION_2: 20, SFRAME_VERSION_3: 16}
# V3: per-function attribute record at the head of each function's FRE block.
V3_FDE_ATTR_SIZE = 5

# sfde_func_info / sfda_func_info bits.
SFRAME_FRE_TYPE_ADDR1 = 0
SFRAME_FRE_TYPE_ADDR2 = 1
SFRAME_FRE_TYPE_ADDR4 = 2
FRE_START_SIZE = {SFRAME_FRE_TYPE_ADDR1: 1, SFRAME_FRE_TYPE_ADDR2: 2, SFRAME_FRE_TYPE_ADDR4: 4}

SFRAME_PC_TYPE_INC = 0
SFRAME_PC_TYPE_MASK = 1

SFRAME_AARCH64_PAUTH_KEY_A = 0
SFRAME_AARCH64_PAUTH_KEY_B = 1

# V3 sfda_func_info2 FDE types.
SFRAME_FDE_TYPE_DEFAULT = 0
SFRAME_FDE_TYPE_FLEX = 1

# FRE info byte.
SFRAME_BASE_REG_FP = 0
SFRAME_BASE_REG_SP = 1
SFRAME_FRE_OFFSET_1B = 0
SFRAME_FRE_OFFSET_2B = 1
SFRAME_FRE_OFFSET_4B = 2
WORD_SIZE = {SFRAME_FRE_OFFSET_1B: 1, SFRAME_FRE_OFFSET_2B: 2, SFRAME_FRE_OFFSET_4B: 4}

# Bounds on what a section may make the decoder do.  V3 counts a function's FREs in 16
# bits; V1/V2 sections claiming more for one function, or more functions than any real
# binary has, are treated as corrupt.
MAX_FDES = 1 << 22
MAX_FRES_PER_FDE = 1 << 16

# Most data words a FRE may carry (default FDEs use at most 3, flex FDEs 6).
MAX_DEFAULT_WORDS = 3
MAX_FLEX_WORDS = 6

# ELF identification of SFrame sections.
SHT_GNU_SFRAME = 0x6FFFFFF4
PT_GNU_SFRAME = 0x6474E554
