"""Readers for TESS files: calibrated FFIs, TESScut cut-outs, SPOC TPFs."""

from pipeline.io.model import FrameStack, StackInfo, TessFileError, header_to_dict

__all__ = ["FrameStack", "StackInfo", "TessFileError", "header_to_dict"]
