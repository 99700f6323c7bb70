"""SFrame (.sframe) decoding: versions 1-3, aarch64 and x86_64."""

from profiler.unwind.sframe.section import FDE, FRE, SFrameError, SFrameSection

__all__ = ["FDE", "FRE", "SFrameError", "SFrameSection"]
