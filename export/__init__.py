"""e3d_export: ONNX, OpenVINO and TensorRT export with numerical verification."""
