"""Sample sources: where RawSamples come from.

* raw capture files (proto/capture.proto): :mod:`profiler.capture.fileformat` (the
  format and its records), :mod:`profiler.capture.writer` (``CaptureWriter`` records a
  run), :mod:`profiler.capture.reader` (``read_capture`` replays it without BPF) and
  :mod:`profiler.capture.packed` (the packed sample layout both use).
* :mod:`profiler.capture.bcc_source` -- live sampling through the distribution's bcc;
  the only module that imports ``bcc``; :mod:`profiler.capture.bcc_compile` runs bcc's
  compile of bpf/sample.bpf.c in a thread that sees a stub /proc/kallsyms, and gives the
  compiler's memory back afterwards.
* :mod:`profiler.capture.records` -- a BPF record as a RawSample.
* :mod:`profiler.capture.snapshots` -- gdb ground-truth snapshot files.

Nothing is imported here, so loading one source never loads the other's dependencies.
"""
