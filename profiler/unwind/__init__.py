"""The unwind stage: raw samples to call chains, and the tables it reads (ELF, SFrame,
CFI, Go pclntab, instruction decoding, the unwind rules)."""
