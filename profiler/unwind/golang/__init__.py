"""Go binaries: the runtime's own function table (.gopclntab) as a source of
function ranges, names, file:line and unwind rules (see pclntab and frames)."""
