"""Targets: exporters (ONNX, OpenVINO IR, TFLite) and quantizers."""
