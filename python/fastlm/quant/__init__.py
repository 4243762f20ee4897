"""Quantization: the policy (QuantScheme) and the methods that choose the quants: round to nearest
(rtn, the NumPy twin of the C++ quantizer), a per-group scale search, GPTQ, and the calibration
GPTQ runs on. The record layout they write is ``fastlm.formats.qrecords``."""
from __future__ import annotations

from fastlm.quant.calibration import calibration_text, llama_hessians
from fastlm.quant.gptq import gptq_q4
from fastlm.quant.rtn import quantize_rtn
from fastlm.quant.scheme import METHODS, PROJECTIONS, QuantScheme
from fastlm.quant.search import fit_dm, quantize_q4_search

__all__ = ["METHODS", "PROJECTIONS", "QuantScheme", "calibration_text", "fit_dm", "gptq_q4", "llama_hessians",
           "quantize_q4_search", "quantize_rtn"]
