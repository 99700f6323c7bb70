"""The symbolize stage: symbol tables (ELF, Go pclntab, kallsyms, perf maps), demangling,
and the resolver that turns aggregated chains into named locations."""
