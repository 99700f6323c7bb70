"""The end-of-run report on stderr: totals, the share of reliable chains, the reasons,
per binary the unwind sources used, and advice for hot binaries whose chains are
often unreliable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from profiler.aggregate import Aggregator
from profiler.unwind.space import AddressSpace

# What would make a binary's chains reliable, by the unwind tables it has
# (ObjectFile.unwind_tables), for a hot binary whose chains often are not.
ADVICE = {
    "none": "has no unwind tables (.eh_frame, .sframe or Go's .gopclntab): its frames "
            "are walked with frame pointers, unreliable; rebuild it with "
            "-fasynchronous-unwind-tables, or -Wa,--gsframe (GNU as >= 2.40) for .sframe",
    "eh_frame": "has CFI (.eh_frame) but chains through it are often unreliable; see the "
                "reasons above (code without CFI, hand-written assembly, a truncated "
                "copy: raise --stack-size)",
    "sframe": "has .sframe but chains through it are often unreliable; see the reasons "
              "above",
    "gopclntab": "is Go, unwound from .gopclntab: chains end unreliable where the runtime "
                 "switches stacks (systemstack, mcall, morestack, calls into C), since "
                 "only the thread's current stack is copied; no rebuild helps",
}
HINT_BELOW = 90.0     # % reliable under which a hot binary gets advice


def summary(agg: Aggregator, lost: int, seconds: float, out: TextIO,
            tables_of: dict[str, str] | None = None) -> None:
    """The end-of-run report: totals, then per binary samples, reliable % and the
    share of its frames each unwind source stepped, and advice for hot binaries
    whose chains are often unreliable (by `tables_of`: path -> unwind tables)."""
    n = agg.samples
    print(f"sframe-prof: {n} samples in {seconds:.1f} s, {lost} lost, "
          f"{agg.reliable_pct():.1f}% of user stacks reliable"
          + (f", {agg.kernel_only} kernel-only" if agg.kernel_only else ""), file=out)
    if lost:
        print("  samples were lost: the buffer filled up; lower -F or the --stack-size",
              file=out)
    if agg.reasons:
        reasons = ", ".join(f"{r} {c}" for r, c in agg.reasons.most_common())
        print(f"  unreliable: {reasons}", file=out)
    rows = sorted(agg.binaries.items(), key=lambda kv: -kv[1].samples)
    hot = [(b, s) for b, s in rows if s.samples]
    if hot:
        print(f"  {'binary':<48} {'samples':>8} {'reliable':>9}  methods", file=out)
    for path, st in hot[:12]:
        total = sum(st.methods.values()) or 1
        methods = ", ".join(f"{m} {100 * c / total:.0f}%" for m, c in st.methods.most_common())
        pct = 100.0 * st.reliable / st.samples if st.samples else 0.0
        print(f"  {path[-48:]:<48} {st.samples:>8} {pct:>8.1f}%  {methods}", file=out)
    for path, st in hot[:12]:
        pct = 100.0 * st.reliable / st.samples if st.samples else 100.0
        kind = (tables_of or {}).get(path)
        if kind in ADVICE and st.samples >= max(1, n // 20) and (
                kind == "none" or pct < HINT_BELOW):
            print(f"  hint: {path} {ADVICE[kind]}", file=out)


def tables_of(spaces: Iterable[AddressSpace], agg: Aggregator) -> dict[str, str]:
    """The unwind tables (ObjectFile.unwind_tables) of each binary on some chain of
    `agg`, found through the address spaces that map it: the summary's advice needs
    them, and opening every other file the processes mapped would be wasted."""
    on_chains = agg.binaries
    out: dict[str, str] = {}
    for space in spaces:
        for m in space.maps:
            if m.executable and m.path in on_chains and m.path not in out:
                obj = space.object_for(m)[0]
                if obj is not None:
                    out[m.path] = obj.unwind_tables()
    return out
