"""Fault injection: corrupt an exported artifact the way a real corruption would look.

For proving a verifier (ours: tests/export/test_fault_injection.py and
``python -m e3d_eval.verify_calibration``; yours: any deployment check). Each fault edits
the artifact itself (the ONNX graph or the OpenVINO IR), not the PyTorch model, so the
verifier must find it from the artifact's outputs alone:

* ``scale_weight``: one convolution's weights x 1.01 (for INT8 artifacts, whose weights
  are int8, the per-channel dequantization scale x 1.01: the same real weights);
* ``zero_bias``: one convolution's bias set to zeros;
* ``swap_channels``: two output channels of one convolution swapped (weights, their
  quantization scales and bias together), as a wrong layout conversion would;
* ``drop_residual``: a residual Add removed, its output replaced by the branch alone.

The target is the first dense (non-grouped) convolution after the stem, the same
layer in every format; ``drop_residual`` takes the first residual Add.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import numpy as np

FAULTS = ("scale_weight", "zero_bias", "swap_channels", "drop_residual")


# ---- ONNX -----------------------------------------------------------------------------
def _onnx_inits(model) -> Dict[str, object]:
    return {i.name: i for i in model.graph.initializer}


def _producers(model) -> Dict[str, object]:
    return {o: n for n in model.graph.node for o in n.output}


def _set_init(model, name: str, array: np.ndarray) -> None:
    from onnx import numpy_helper

    for i, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array.astype(
                numpy_helper.to_array(init).dtype), name))
            return
    raise KeyError(name)


def _onnx_target_conv(model):
    """The first dense Conv after the stem (group 1, not the first Conv)."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"
             and all(a.i == 1 for a in n.attribute if a.name == "group")]
    if len(convs) < 2:
        raise AssertionError("no dense convolution after the stem")
    return convs[1]


def _onnx_weight_sources(model, conv):
    """[(initializer name, axis of output channels)]: the tensors that make up the weight.

    Float weights are one initializer; a Q/DQ weight is DequantizeLinear(int8, scale):
    the int8 tensor (axis 0) and its per-channel scale (axis 0, 1-D).
    """
    inits = _onnx_inits(model)
    name = conv.input[1]
    if name in inits:
        return [name], None
    dq = _producers(model)[name]
    assert dq.op_type == "DequantizeLinear", dq.op_type
    return [dq.input[0], dq.input[1]], dq


def onnx_fault(src: Path, dst: Path, fault: str) -> Path:
    """Write ``src`` with ``fault`` applied to ``dst`` (an edited copy of the ONNX file)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = _onnx_inits(model)
    arr = lambda n: numpy_helper.to_array(inits[n]).copy()  # noqa: E731
    conv = _onnx_target_conv(model)
    if fault == "scale_weight":
        names, dq = _onnx_weight_sources(model, conv)
        target = names[1] if dq is not None else names[0]  # int8 weights: scale their scale
        _set_init(model, target, arr(target) * 1.01)
    elif fault == "zero_bias":
        bias = conv.input[2]
        if bias not in inits:  # a quantized bias: zero its int32 values
            bias = _producers(model)[bias].input[0]
        _set_init(model, bias, np.zeros_like(arr(bias)))
    elif fault == "swap_channels":
        names, _ = _onnx_weight_sources(model, conv)
        sources = list(names)
        if len(conv.input) > 2:
            b = conv.input[2]
            sources.append(b if b in inits else _producers(model)[b].input[0])
        for n in sources:
            a = arr(n)
            if a.ndim == 0 or a.shape[0] < 2:
                continue  # a per-tensor scale has no channels
            a[[0, 1]] = a[[1, 0]]
            _set_init(model, n, a)
    elif fault == "drop_residual":
        add = _onnx_residual_add(model)
        keep, gone = add.input[0], add.output[0]
        model.graph.node.remove(add)
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name == gone:
                    node.input[i] = keep
    else:
        raise ValueError(fault)
    onnx.save(model, str(dst))
    return dst


def _onnx_residual_add(model):
    """The first Add of a branch and a shortcut: one operand is a block output
    (Relu, pooling, or its Q/DQ), not a Conv/Add of the same block (a temporal tap sum)."""
    inits = _onnx_inits(model)
    prod = _producers(model)

    def origin(name):
        node = prod.get(name)
        while node is not None and node.op_type in ("DequantizeLinear", "QuantizeLinear", "Cast"):
            node = prod.get(node.input[0])
        return node.op_type if node is not None else "input"

    for node in model.graph.node:
        if node.op_type == "Add" and not any(i in inits for i in node.input):
            if any(origin(i) in ("Relu", "AveragePool", "input") for i in node.input):
                return node
    raise AssertionError("no residual Add in the graph")


# ---- OpenVINO IR ----------------------------------------------------------------------
def _through(output, types=("Convert",)):
    node = output.get_node()
    while node.get_type_name() in types:
        output = node.input_value(0)
        node = output.get_node()
    return output


def _replace_constant(const_node, array: np.ndarray) -> None:
    import openvino as ov

    new = ov.op.Constant(np.ascontiguousarray(array.astype(const_node.get_data().dtype)))
    new.set_friendly_name(const_node.get_friendly_name())
    for target in list(const_node.output(0).get_target_inputs()):
        target.replace_source_output(new.output(0))


def _ov_target_conv(model):
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    if len(convs) < 2:
        raise AssertionError("no dense convolution after the stem")
    return convs[1]


def _ov_weight_constants(conv):
    """Constants making up the weight: [float weights] or [int8 weights, float scale]."""
    src = conv.input_value(1).get_node()
    if src.get_type_name() == "Multiply":  # NNCF: Convert(int8) * scale
        consts = []
        for i in range(2):
            n = _through(src.input_value(i)).get_node()
            if n.get_type_name() == "Constant":
                consts.append(n)
        return sorted(consts, key=lambda c: c.get_data().dtype.kind != "i")  # int8 first
    n = _through(conv.input_value(1)).get_node()
    assert n.get_type_name() == "Constant", n.get_type_name()
    return [n]


def _ov_bias_constant(conv):
    for target in conv.output(0).get_target_inputs():
        add = target.get_node()
        if add.get_type_name() == "Add":
            for i in range(2):
                n = _through(add.input_value(i)).get_node()
                if n.get_type_name() == "Constant":
                    return n
    raise AssertionError("the convolution has no bias Add")


def openvino_fault(src: Path, dst: Path, fault: str) -> Path:
    """Write the IR ``src`` with ``fault`` applied to ``dst`` (.xml + .bin)."""
    import openvino as ov

    model = ov.Core().read_model(str(src))
    conv = _ov_target_conv(model)
    if fault == "scale_weight":
        consts = _ov_weight_constants(conv)
        target = consts[-1]  # float weights, or the scale of int8 weights
        _replace_constant(target, target.get_data().astype(np.float32) * 1.01)
    elif fault == "zero_bias":
        c = _ov_bias_constant(conv)
        _replace_constant(c, np.zeros_like(c.get_data()))
    elif fault == "swap_channels":
        out_ch = conv.get_output_partial_shape(0)[1].get_length()
        for c in _ov_weight_constants(conv) + [_ov_bias_constant(conv)]:
            a = c.get_data().copy()
            axis = next(ax for ax, d in enumerate(a.shape) if d == out_ch and (ax == 0 or a.shape[0] == 1))
            idx = [slice(None)] * a.ndim
            i0, i1 = list(idx), list(idx)
            i0[axis], i1[axis] = 0, 1
            a[tuple(i0)], a[tuple(i1)] = a[tuple(i1)].copy(), a[tuple(i0)].copy()
            _replace_constant(c, a)
    elif fault == "drop_residual":
        add = _ov_residual_add(model)
        add.output(0).replace(add.input_value(0))
    else:
        raise ValueError(fault)
    ov.save_model(model, str(dst), compress_to_fp16=False)
    return dst


def _ov_residual_add(model):
    def origin(output):
        return _through(output, ("Convert", "FakeQuantize")).get_node().get_type_name()

    for op in model.get_ordered_ops():
        if op.get_type_name() == "Add":
            kinds = [origin(op.input_value(i)) for i in range(2)]
            if "Constant" not in kinds and any(k in ("Relu", "AvgPool", "Parameter") for k in kinds):
                return op
    raise AssertionError("no residual Add in the IR")


def inject(src: Path, dst_dir: Path, fault: str) -> Path:
    """Apply ``fault`` to the artifact ``src`` (.onnx or .xml); returns the faulty copy."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / f"{src.stem}_{fault}{src.suffix}"
    apply: Callable = onnx_fault if src.suffix == ".onnx" else openvino_fault
    return apply(src, dst, fault)

