"""Quantized artifacts: the same files as `rapsam.convert` writes, with int8 weights (and activations).

Toolchain modules (`rapsam.quantize.onnx`, ...) load lazily through `get_quantizer`, so importing this
package never needs a backend.
"""

from rapsam.quantize.base import Calibration, QuantizationError, Quantizer, check_scheme, get_quantizer
from rapsam.quantize.calibration import load_calibration

__all__ = ["Calibration", "QuantizationError", "Quantizer", "check_scheme", "get_quantizer", "load_calibration"]
