"""Keep ONNX Runtime's blocked (NCHWc) layout across the frame shifts of a 2D-lowered E3D.

ONNX Runtime's CPU provider runs convolutions fastest in its blocked channel layout
(NCHWc: channels in blocks of 8 or 16, the SIMD width); its NCHWc transformer rewrites
Conv into ``com.microsoft.nchwc:Conv`` and puts ``ReorderOutput`` (blocked -> NCHW) and
``ReorderInput`` (NCHW -> blocked) around every node it does not know. The lowered E3D
(:mod:`e3d_export.lower2d`) shifts frames for each temporal tap with a Reshape to
(N, T, C*H*W), a Pad on the frame axis and a Reshape back; ONNX Runtime does not know
those are layout-free, so every temporal conv paid one ``ReorderOutput`` and one
``ReorderInput`` per side tap, full copies of the activation, ~14 % of E3D-S's time.

They are layout-free: they move whole frames, and in NCHWc each frame (one batch entry)
is still one contiguous block of ``C*H*W`` floats, zeros included. So when the channel
count is a multiple of 16 (then the blocked tensor has exactly the NCHW shape for both
block sizes) the chain can run on the blocked tensor directly: :func:`fold_reorders`
rewires ``ReorderOutput -> Reshape(N, T, C*H*W) -> Pad/Slice on the frame axis ->
Reshape(N*T, C, H, W) -> ReorderInput`` to skip both reorders. It is applied to the graph
ONNX Runtime optimized on this machine (the block size is the CPU's), and only to chains
made of exactly those nodes; anything else is left as it was. Outputs are bit-identical
(the same arithmetic on the same values; tested).
"""
from __future__ import annotations

import collections
from typing import Any, Dict, List, Optional, Tuple

NCHWC = "com.microsoft.nchwc"


def fold_reorders(model: Any) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto`` of an ONNX Runtime-optimized graph) in
    place; returns how many Reshape chains now run on blocked tensors."""
    import onnx
    from onnx import numpy_helper

    g = model.graph
    consts: Dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and not n.domain:
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    consumers: Dict[str, List[Any]] = collections.defaultdict(list)
    for n in g.node:
        for name in n.input:
            consumers[name].append(n)
    graph_outputs = {o.name for o in g.output}
    drop, rename, folded = set(), {}, 0
    for r in list(g.node):
        if r.domain != NCHWC or r.op_type != "ReorderOutput":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in r.attribute}
        channels = int(attrs.get("channels") or 0)
        if channels <= 0 or channels % 16 or attrs.get("channels_last", 0):
            continue
        for first in list(consumers[r.output[0]]):
            terminals = _frame_chain(first, channels, consts, consumers, graph_outputs)
            if terminals is None:
                continue
            first.input[0] = r.input[0]
            for reorder_in in terminals:
                rename[reorder_in.output[0]] = reorder_in.input[0]
                drop.add(id(reorder_in))
            consumers[r.output[0]].remove(first)
            folded += 1
        if not consumers[r.output[0]] and r.output[0] not in graph_outputs:
            drop.add(id(r))
    if not folded:
        return 0
    keep = [n for n in g.node if id(n) not in drop]
    for n in keep:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
    del g.node[:]
    g.node.extend(keep)
    return folded


def _frame_chain(first: Any, channels: int, consts: Dict[str, Any], consumers: Dict[str, List[Any]],
                 graph_outputs: set) -> Optional[List[Any]]:
    """The ReorderInput nodes ending a chain ``Reshape(N, T, C*H*W) -> (Pad | Slice on
    axis 1)* -> Reshape(N*T, C, H, W) -> ReorderInput`` that starts at ``first``, or None
    when anything else hangs off it."""
    if first.domain or first.op_type != "Reshape" or not _shape_ok(consts.get(first.input[1]), 3, channels):
        return None
    terminals: List[Any] = []
    stack: List[Tuple[Any, bool]] = [(first, False)]
    while stack:
        node, per_frame = stack.pop()  # per_frame: shaped (N*T, C, H, W) again
        if node.output[0] in graph_outputs:
            return None
        for nxt in consumers[node.output[0]]:
            if per_frame:
                if nxt.domain == NCHWC and nxt.op_type == "ReorderInput":
                    terminals.append(nxt)
                    continue
                return None
            if nxt.domain:
                return None
            if nxt.op_type == "Pad" and _frame_pad(nxt, consts):
                stack.append((nxt, False))
            elif nxt.op_type == "Slice" and _frame_slice(nxt, consts):
                stack.append((nxt, False))
            elif nxt.op_type == "Reshape" and _shape_ok(consts.get(nxt.input[1]), 4, channels):
                stack.append((nxt, True))
            else:
                return None
    return terminals or None


def _shape_ok(shape: Any, rank: int, channels: int) -> bool:
    if shape is None or shape.ndim != 1 or len(shape) != rank:
        return False
    # (N, T, C*H*W): whole frames stay whole; (N*T, C, H, W): the same channel count
    return bool(shape[2] % channels == 0) if rank == 3 else int(shape[1]) == channels


def _frame_pad(node: Any, consts: Dict[str, Any]) -> bool:
    import onnx

    mode = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}.get("mode", b"constant")
    pads = consts.get(node.input[1]) if len(node.input) > 1 else None
    value = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if mode != b"constant" or pads is None or len(pads) != 6 or (value is not None and value.any()):
        return False
    return not (pads[0] or pads[2] or pads[3] or pads[5])  # only the frame axis (1) moves


def _frame_slice(node: Any, consts: Dict[str, Any]) -> bool:
    axes = consts.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    steps = consts.get(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    return axes is not None and [int(a) for a in axes.reshape(-1)] in ([1], [-2]) and (
        steps is None or [int(s) for s in steps.reshape(-1)] == [1])
