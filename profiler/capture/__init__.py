"""Sample sources: where RawSamples come from.

* :mod:`profiler.capture.recording` -- raw capture files (proto/capture.proto):
  ``CaptureWriter`` records a run, ``read_capture`` replays it without BPF.
* :mod:`profiler.capture.bcc_source` -- live sampling through the distribution's bcc;
  the only module that imports ``bcc``.

Nothing is imported here, so loading one source never loads the other's dependencies.
"""
