"""A minimal ONNX → TensorFlow evaluator: frozen ONNX graphs as differentiable TF functions.

The identity loss L_id (Eq. 9) needs a face-recognition network through which
gradients flow back to the rendered image; onnxruntime gives no gradients, so
this module re-evaluates an ``.onnx`` graph node by node with TensorFlow ops.

Parsing uses ``google.protobuf`` (installed with TensorFlow) with the subset of
``onnx.proto`` read here, declared with the upstream field numbers, so the
``onnx`` package is not needed; protobuf skips unknown fields.

Layout: ONNX image tensors are NCHW, while TensorFlow's CPU convolutions need
NHWC. Each value carries a flag: rank-4 values made by convolutions, pooling
and the element-wise ops around them stay NHWC (ONNX's NCHW tensor transposed
by ``(0, 2, 3, 1)``); a value goes back to ONNX layout only where an op needs it
(Reshape, Flatten, Gemm, …) and for the graph outputs. Image inputs may be
passed as NHWC (``nhwc_inputs=True``), skipping the first transpose.

Floating-point tensors are evaluated in float32. Supported ops:
:data:`SUPPORTED_OPS`; a model using any other op raises
:class:`UnsupportedOnnxOpError` naming it when it is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# The subset of onnx.proto read here, with the upstream field numbers:
# "field=number:type", type a scalar type or a message of this table, "*" = repeated.
_SCHEMA = {
    "TensorProto": "dims=1:int64* data_type=2:int32 float_data=4:float* int32_data=5:int32* "
                   "int64_data=7:int64* name=8:string raw_data=9:bytes double_data=10:double* "
                   "data_location=14:int32",
    "AttributeProto": "name=1:string f=2:float i=3:int64 s=4:bytes t=5:TensorProto "
                      "floats=7:float* ints=8:int64* strings=9:bytes* type=20:int32",
    "NodeProto": "input=1:string* output=2:string* name=3:string op_type=4:string "
                 "attribute=5:AttributeProto* domain=7:string",
    "Dimension": "dim_value=1:int64 dim_param=2:string",
    "TensorShapeProto": "dim=1:Dimension*",
    "TensorTypeProto": "elem_type=1:int32 shape=2:TensorShapeProto",
    "TypeProto": "tensor_type=1:TensorTypeProto",
    "ValueInfoProto": "name=1:string type=2:TypeProto",
    "GraphProto": "node=1:NodeProto* name=2:string initializer=5:TensorProto* "
                  "input=11:ValueInfoProto* output=12:ValueInfoProto*",
    "OperatorSetIdProto": "domain=1:string version=2:int64",
    "ModelProto": "ir_version=1:int64 producer_name=2:string producer_version=3:string "
                  "graph=7:GraphProto opset_import=8:OperatorSetIdProto*",
}

# TensorProto.DataType -> numpy dtype.
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
           7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}

_TO_NHWC = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)
_NHWC_AXIS = (0, 3, 1, 2)  # ONNX (NCHW) axis a of a 4-D value is NHWC axis _NHWC_AXIS[a].


class UnsupportedOnnxOpError(NotImplementedError):
    """An ONNX op (or op variant) that this evaluator does not implement."""


class OnnxFormatError(ValueError):
    """A malformed ONNX file or one using a feature this evaluator cannot read."""


@functools.cache
def onnx_proto_class() -> type:
    """The ``ModelProto`` message class (a subset of ``onnx.proto``, upstream field numbers).

    Nested messages are reached through fields, e.g. ``m.graph.node.add(op_type="Relu")``;
    ``SerializeToString()`` writes a file that onnxruntime reads.
    """
    field_proto = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="recon_tf_onnx_subset.proto",
                                            package="recon_tf_onnx", syntax="proto2")
    for msg_name, fields in _SCHEMA.items():
        msg = fd.message_type.add(name=msg_name)
        for spec in fields.split():
            name, rest = spec.split("=")
            number, kind = rest.rstrip("*").split(":")
            field = msg.field.add(name=name, number=int(number), label=(
                field_proto.LABEL_REPEATED if rest.endswith("*") else field_proto.LABEL_OPTIONAL))
            if kind in _SCHEMA:
                field.type, field.type_name = field_proto.TYPE_MESSAGE, f".recon_tf_onnx.{kind}"
            else:
                field.type = getattr(field_proto, f"TYPE_{kind.upper()}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("recon_tf_onnx.ModelProto"))


def read_model_proto(path: str) -> Any:
    """Parse an ``.onnx`` file into a ``ModelProto`` message (see :func:`onnx_proto_class`)."""
    with open(path, "rb") as f:
        data = f.read()
    model = onnx_proto_class()()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError (its class differs by backend)
        raise OnnxFormatError(f"{path} is not a valid ONNX model: {e}") from e
    if not model.HasField("graph"):
        raise OnnxFormatError(f"{path} has no graph: not an ONNX model?")
    return model


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """Decode a ``TensorProto`` into a numpy array (floating types become float32)."""
    if tensor.data_location == 1:
        raise OnnxFormatError(f"tensor {tensor.name!r} uses external data, which is not "
                              "supported: re-save the model with the weights inside the file")
    dtype = _DTYPES.get(tensor.data_type)
    if dtype is None:
        raise OnnxFormatError(f"tensor {tensor.name!r}: unsupported data type {tensor.data_type}")
    if tensor.raw_data:
        arr = np.frombuffer(tensor.raw_data, dtype=np.dtype(dtype).newbyteorder("<"))
    elif tensor.data_type == 10:  # float16 bit patterns stored in int32_data
        arr = np.asarray(tensor.int32_data, np.uint16).view(np.float16)
    else:
        field = {1: "float_data", 7: "int64_data", 11: "double_data"}.get(tensor.data_type)
        arr = np.asarray(getattr(tensor, field or "int32_data"))
    arr = arr.astype(np.float32 if np.issubdtype(dtype, np.floating) else dtype)
    return arr.reshape(tuple(tensor.dims))


_ATTRIBUTE_READERS: dict[int, Callable[[Any], Any]] = {
    1: lambda a: float(a.f), 2: lambda a: int(a.i), 3: lambda a: a.s.decode("utf-8"),
    4: lambda a: tensor_to_numpy(a.t), 6: lambda a: [float(v) for v in a.floats],
    7: lambda a: [int(v) for v in a.ints], 8: lambda a: [s.decode("utf-8") for s in a.strings]}


def _attribute_value(attr: Any) -> Any:
    """An AttributeProto's value (None for graphs and sparse tensors, which no op here reads)."""
    kind = attr.type or (1 if attr.HasField("f") else 2 if attr.HasField("i") else
                         3 if attr.HasField("s") else 4 if attr.HasField("t") else
                         6 if len(attr.floats) else 7 if len(attr.ints) else 0)
    reader = _ATTRIBUTE_READERS.get(kind)
    return reader(attr) if reader else None


@dataclasses.dataclass
class _Node:
    index: int
    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]

    def describe(self) -> str:
        return f"{self.op_type} node {self.name or self.index!r}"


@dataclasses.dataclass
class _Value:
    """A tensor (or static numpy array) and whether it is stored NHWC (see module doc)."""

    data: Any
    nhwc: bool = False


def _rank(x: Any) -> int | None:
    return x.ndim if isinstance(x, np.ndarray) else x.shape.rank


def _transpose(x: Any, perm: tuple[int, ...]) -> Any:
    return np.transpose(x, perm) if isinstance(x, np.ndarray) else tf.transpose(x, perm)


def _onnx_layout(v: _Value) -> Any:
    """The value in ONNX's own layout (numpy arrays stay numpy)."""
    return _transpose(v.data, _TO_NCHW) if v.nhwc else v.data


def _to_nhwc(v: _Value) -> Any:
    """A rank-4 value as NHWC."""
    if v.nhwc:
        return v.data
    if _rank(v.data) != 4:
        raise UnsupportedOnnxOpError(f"expected a 4-D (NCHW) tensor, got rank {_rank(v.data)}")
    return _transpose(v.data, _TO_NHWC)


def _broadcast_nhwc(v: _Value) -> Any:
    """An operand of an element-wise op whose partner is NHWC, aligned for broadcasting."""
    if v.nhwc:
        return v.data
    x = v.data
    rank = _rank(x)
    if rank is None or rank > 4:
        raise UnsupportedOnnxOpError(f"cannot broadcast a rank-{rank} tensor against NCHW")
    if rank < 4:
        shape = (1,) * (4 - rank) + tuple(x.shape)
        x = x.reshape(shape) if isinstance(x, np.ndarray) else tf.reshape(x, shape)
    return _transpose(x, _TO_NHWC)


def _elementwise(fn: Callable[..., Any], values: list[_Value]) -> _Value:
    """Apply ``fn`` with ONNX (numpy-style) broadcasting, keeping NHWC when an input is NHWC."""
    if any(v.nhwc for v in values):
        return _Value(fn(*[_broadcast_nhwc(v) for v in values]), True)
    return _Value(fn(*[_onnx_layout(v) for v in values]))


def _static(x: Any) -> np.ndarray | None:
    """The value of a constant-foldable tensor as numpy, else None."""
    if isinstance(x, np.ndarray):
        return x
    value = tf.get_static_value(x)
    return None if value is None else np.asarray(value)


def _pads_2d(node: _Node) -> str | list[list[int]]:
    """ONNX 2-D padding attributes as a TF NHWC padding (``"VALID"``, ``"SAME"`` or explicit)."""
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("VALID", "SAME_UPPER"):
        return "VALID" if auto_pad == "VALID" else "SAME"
    if auto_pad != "NOTSET":
        raise UnsupportedOnnxOpError(f"{node.describe()}: auto_pad={auto_pad} is not supported")
    top, left, bottom, right = node.attrs.get("pads", [0, 0, 0, 0])
    if not any((top, left, bottom, right)):
        return "VALID"
    return [[0, 0], [top, bottom], [left, right], [0, 0]]


def _pad_explicit(x: tf.Tensor, padding: str | list[list[int]],
                  value: float = 0.0) -> tuple[tf.Tensor, str]:
    if isinstance(padding, str):
        return x, padding
    return tf.pad(x, padding, constant_values=value), "VALID"


def _check_2d(node: _Node, key: str, rank: int | None) -> None:
    shape = node.attrs.get(key)
    if (shape is not None and len(shape) != 2) or (rank is not None and rank != 4):
        raise UnsupportedOnnxOpError(f"{node.describe()}: only 2-D (NCHW) variants are supported")


class OnnxModel:
    """A frozen ONNX graph evaluated with TensorFlow ops (differentiable w.r.t. its inputs).

    Args:
      path: the ``.onnx`` file (weights inside the file).
      dynamic_batch: exporters traced at batch 1 often bake that batch into a
        Reshape target (e.g. ``[1, -1]``). When True, a Reshape whose target
        starts with a literal 1 keeps the data's leading (batch) dimension
        instead, so a batch of B images gives B rows. Set False for the exact
        ONNX semantics.

    Raises:
      UnsupportedOnnxOpError: the graph uses an op not in :data:`SUPPORTED_OPS`
        (the message names every such op and a node using it).
      OnnxFormatError: the file cannot be read.
    """

    def __init__(self, path: str, dynamic_batch: bool = True):
        self.path = path
        self.dynamic_batch = dynamic_batch
        proto = read_model_proto(path)
        graph = proto.graph
        self.producer = f"{proto.producer_name} {proto.producer_version}".strip()
        self.opset = max([int(o.version) for o in proto.opset_import
                          if o.domain in ("", "ai.onnx")] or [1])
        self.initializers = {t.name: tensor_to_numpy(t) for t in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in self.initializers]
        self.input_shapes = {
            i.name: tuple(int(d.dim_value) if d.HasField("dim_value") else None
                          for d in i.type.tensor_type.shape.dim)
            for i in graph.input if i.name not in self.initializers}
        self.output_names = [o.name for o in graph.output]
        self._nodes = [
            _Node(k, n.op_type, n.name, list(n.input), list(n.output),
                  {a.name: _attribute_value(a) for a in n.attribute})
            for k, n in enumerate(graph.node)]
        unsupported = {}
        for proto_node, node in zip(graph.node, self._nodes):
            if proto_node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
                key = f"{proto_node.domain + '::' if proto_node.domain else ''}{node.op_type}"
                unsupported.setdefault(key, node.name or str(node.index))
        if unsupported:
            ops = ", ".join(f"{op} (e.g. node {name!r})" for op, name in unsupported.items())
            raise UnsupportedOnnxOpError(
                f"{path}: unsupported ONNX op(s): {ops}. recon_tf.nets.onnx_tf supports: "
                f"{', '.join(sorted(SUPPORTED_OPS))}")
        self._consts: dict[tuple[int, str], tf.Tensor] = {}

    @property
    def op_types(self) -> list[str]:
        """The distinct op types of the graph, in order of first use."""
        return list(dict.fromkeys(n.op_type for n in self._nodes))

    def cached_constant(self, node: _Node, key: str, make: Callable[[], np.ndarray]) -> tf.Tensor:
        """A per-node eager constant built once (safe to capture from any tf.function)."""
        k = (node.index, key)
        if k not in self._consts:
            with tf.init_scope():
                self._consts[k] = tf.constant(make())
        return self._consts[k]

    @tf.autograph.experimental.do_not_convert  # plain Python over a static node list
    def __call__(self, *inputs: tf.Tensor | np.ndarray, nhwc_inputs: bool = False
                 ) -> list[tf.Tensor]:
        """Evaluate the graph.

        Args:
          *inputs: one tensor per graph input (:attr:`input_names` order), in
            ONNX layout, float inputs as float32.
          nhwc_inputs: 4-D inputs are given as NHWC (ONNX NCHW transposed by
            (0, 2, 3, 1)), e.g. [B, H, W, 3] images for an NCHW [B, 3, H, W] input.

        Returns:
          One tensor per graph output (:attr:`output_names` order), ONNX layout.
        """
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.path} takes {len(self.input_names)} input(s) "
                             f"{self.input_names}, got {len(inputs)}")
        env: dict[str, _Value] = {k: _Value(v) for k, v in self.initializers.items()}
        for name, x in zip(self.input_names, inputs):
            x = tf.convert_to_tensor(x)
            if x.dtype.is_floating and x.dtype != tf.float32:
                x = tf.cast(x, tf.float32)
            env[name] = _Value(x, nhwc_inputs and x.shape.rank == 4)
        for node in self._nodes:
            args = []
            for name in node.inputs:
                if name and name not in env:
                    raise OnnxFormatError(f"{node.describe()}: input {name!r} is not computed "
                                          "before it (graph not topologically sorted?)")
                args.append(env[name] if name else None)
            try:
                outs = SUPPORTED_OPS[node.op_type](self, node, args)
            except (UnsupportedOnnxOpError, OnnxFormatError):
                raise
            except Exception as e:
                raise RuntimeError(f"{self.path}: evaluating {node.describe()} failed: {e}") from e
            for name, value in zip(node.outputs, outs):
                env[name] = value
        return [tf.convert_to_tensor(_onnx_layout(env[name])) for name in self.output_names]


@functools.cache
def _load_cached(path: str, dynamic_batch: bool) -> OnnxModel:
    return OnnxModel(path, dynamic_batch)


def load_onnx_model(path: str, dynamic_batch: bool = True) -> OnnxModel:
    """Load an :class:`OnnxModel`, once per process per (absolute path, dynamic_batch)."""
    return _load_cached(os.path.abspath(path), dynamic_batch)


# ----------------------------------------------------------------------------- ops
# Each op: (model, node, inputs: list[_Value | None]) -> list[_Value].

_Op = Callable[[OnnxModel, _Node, list], list[_Value]]


def _unary(fn: Callable[[tf.Tensor, dict], tf.Tensor]) -> _Op:
    """A layout-preserving op of one input; ``fn(x, attributes)``."""
    def op(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
        return [_Value(fn(tf.convert_to_tensor(args[0].data), node.attrs), args[0].nhwc)]
    return op


def _binary(fn: Callable[[Any, Any], tf.Tensor]) -> _Op:
    def op(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
        return [_elementwise(fn, args[:2])]
    return op


def _op_clip(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    x = args[0]
    if model.opset < 11:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
    else:
        lo = args[1].data if len(args) > 1 and args[1] is not None else None
        hi = args[2].data if len(args) > 2 and args[2] is not None else None
    y = tf.convert_to_tensor(x.data)
    if lo is not None:
        y = tf.maximum(y, tf.cast(lo, y.dtype))
    if hi is not None:
        y = tf.minimum(y, tf.cast(hi, y.dtype))
    return [_Value(y, x.nhwc)]


def _op_prelu(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    return [_elementwise(lambda x, s: tf.where(x < 0, x * s, x), args[:2])]


def _op_batch_norm(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    if node.attrs.get("training_mode", 0):
        raise UnsupportedOnnxOpError(f"{node.describe()}: training_mode=1 is not supported")
    x, scale, bias, mean, var = args[:5]
    eps = node.attrs.get("epsilon", 1e-5)
    mul = tf.convert_to_tensor(scale.data) / tf.sqrt(tf.convert_to_tensor(var.data) + eps)
    add = tf.convert_to_tensor(bias.data) - tf.convert_to_tensor(mean.data) * mul
    data = tf.convert_to_tensor(x.data)
    if not x.nhwc:  # channels on axis 1
        shape = [-1] + [1] * (data.shape.rank - 2)
        mul, add = tf.reshape(mul, shape), tf.reshape(add, shape)
    return [_Value(data * mul + add, x.nhwc)]


def _op_conv(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    x, w = args[0], args[1]
    _check_2d(node, "kernel_shape", _rank(w.data))
    if not isinstance(w.data, np.ndarray):
        raise UnsupportedOnnxOpError(f"{node.describe()}: only constant weights are supported")
    strides = node.attrs.get("strides", [1, 1])
    dilations = node.attrs.get("dilations", [1, 1])
    groups = node.attrs.get("group", 1)
    kernel = w.data  # [O, I / groups, kh, kw]
    c_out, c_in = kernel.shape[0], kernel.shape[1] * groups
    padding = _pads_2d(node)
    xs = tf.convert_to_tensor(_to_nhwc(x))
    if groups == 1:
        f = model.cached_constant(node, "w", lambda: kernel.transpose(2, 3, 1, 0))
        y = tf.nn.conv2d(xs, f, strides, padding, dilations=dilations)
    elif groups == c_in and kernel.shape[1] == 1 and strides[0] == strides[1]:
        mult = c_out // c_in  # ONNX output o reads input o // mult, as TF's c * mult + j
        f = model.cached_constant(node, "w", lambda: kernel.transpose(2, 3, 0, 1).reshape(
            kernel.shape[2], kernel.shape[3], c_in, mult))
        xs, pad = _pad_explicit(xs, padding)
        y = tf.nn.depthwise_conv2d(xs, f, [1, strides[0], strides[1], 1], pad,
                                   dilations=dilations)
    else:
        f = model.cached_constant(node, "w", lambda: kernel.transpose(2, 3, 1, 0))
        xs, pad = _pad_explicit(xs, padding)
        parts = tf.split(xs, groups, axis=3)
        fs = tf.split(f, groups, axis=3)
        y = tf.concat([tf.nn.conv2d(p, g, strides, pad, dilations=dilations)
                       for p, g in zip(parts, fs)], axis=3)
    if len(args) > 2 and args[2] is not None:
        y = tf.nn.bias_add(y, tf.convert_to_tensor(args[2].data))
    return [_Value(y, True)]


def _pool_window(node: _Node) -> tuple[list[int], list[int], str | list[list[int]]]:
    if node.attrs.get("ceil_mode", 0) or any(d != 1 for d in node.attrs.get("dilations", [1])):
        raise UnsupportedOnnxOpError(f"{node.describe()}: ceil_mode / dilations not supported")
    kernel = node.attrs["kernel_shape"]
    return kernel, node.attrs.get("strides", [1] * len(kernel)), _pads_2d(node)


def _op_max_pool(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    _check_2d(node, "kernel_shape", _rank(args[0].data))
    if len(node.outputs) > 1 and node.outputs[1]:
        raise UnsupportedOnnxOpError(f"{node.describe()}: the Indices output is not supported")
    kernel, strides, padding = _pool_window(node)
    x, pad = _pad_explicit(tf.convert_to_tensor(_to_nhwc(args[0])), padding, float("-inf"))
    return [_Value(tf.nn.max_pool2d(x, kernel, strides, pad), True)]


def _op_average_pool(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    _check_2d(node, "kernel_shape", _rank(args[0].data))
    kernel, strides, padding = _pool_window(node)
    count = node.attrs.get("count_include_pad", 0)  # TF's SAME never counts the padding
    if (padding == "SAME" and count) or (isinstance(padding, list) and not count):
        raise UnsupportedOnnxOpError(f"{node.describe()}: padding with count_include_pad={count}")
    x, pad = _pad_explicit(tf.convert_to_tensor(_to_nhwc(args[0])), padding)
    return [_Value(tf.nn.avg_pool2d(x, kernel, strides, pad), True)]


def _global_pool(fn: Callable[..., tf.Tensor]) -> _Op:
    def op(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
        _check_2d(node, "", _rank(args[0].data))
        x = tf.convert_to_tensor(_to_nhwc(args[0]))
        return [_Value(fn(x, axis=[1, 2], keepdims=True), True)]
    return op


def _op_flatten(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    x = tf.convert_to_tensor(_onnx_layout(args[0]))
    axis = node.attrs.get("axis", 1)
    axis = axis + x.shape.rank if axis < 0 else axis
    lead = tf.reduce_prod(tf.shape(x)[:axis]) if axis else 1
    return [_Value(tf.reshape(x, tf.stack([lead, -1])))]


def _op_reshape(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    x = tf.convert_to_tensor(_onnx_layout(args[0]))
    target = _static(args[1].data)
    if target is None:
        return [_Value(tf.reshape(x, tf.cast(args[1].data, tf.int32)))]
    dims: list[Any] = [int(d) for d in target]
    if not node.attrs.get("allowzero", 0):
        dims = [tf.shape(x)[i] if d == 0 else d for i, d in enumerate(dims)]
    if model.dynamic_batch and dims and isinstance(dims[0], int) and dims[0] == 1:
        dims[0] = tf.shape(x)[0]
    if all(isinstance(d, int) for d in dims):
        return [_Value(tf.reshape(x, dims))]
    return [_Value(tf.reshape(x, tf.stack([tf.cast(d, tf.int32) for d in dims])))]


def _op_transpose(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    x = _onnx_layout(args[0])
    perm = node.attrs.get("perm", list(range(_rank(x)))[::-1])
    return [_Value(_transpose(x, tuple(perm)))]


def _op_concat(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    values = [a for a in args if a is not None]
    axis = node.attrs["axis"]
    if all(v.nhwc for v in values):
        return [_Value(tf.concat([v.data for v in values], _NHWC_AXIS[axis % 4]), True)]
    parts = [_onnx_layout(v) for v in values]
    if all(isinstance(p, np.ndarray) for p in parts):
        return [_Value(np.concatenate(parts, axis))]
    return [_Value(tf.concat([tf.cast(p, parts[0].dtype) for p in parts], axis))]


def _op_gemm(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    a, b = (tf.convert_to_tensor(_onnx_layout(v)) for v in args[:2])
    y = tf.linalg.matmul(a, b, transpose_a=bool(node.attrs.get("transA", 0)),
                         transpose_b=bool(node.attrs.get("transB", 0)))
    y = y * node.attrs.get("alpha", 1.0)
    if len(args) > 2 and args[2] is not None:
        y = y + node.attrs.get("beta", 1.0) * tf.convert_to_tensor(_onnx_layout(args[2]))
    return [_Value(y)]


def _op_matmul(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    a, b = (tf.convert_to_tensor(_onnx_layout(v)) for v in args[:2])
    if a.shape.rank is not None and a.shape.rank > 2 and b.shape.rank == 2:
        # [..., K] x [K, N] as one 2-D product: a batched matmul broadcasting a rank-2
        # operand corrupts memory under oneDNN on AVX-512 CPUs (README "Known issues").
        shape = tf.shape(a)
        flat = tf.linalg.matmul(tf.reshape(a, [-1, shape[-1]]), b)
        return [_Value(tf.reshape(flat, tf.concat([shape[:-1], tf.shape(b)[1:]], 0)))]
    return [_Value(tf.linalg.matmul(a, b))]  # 1-D operands fail, naming the node


def _op_constant(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in node.attrs:
            value = np.asarray(node.attrs[key])
            if value.dtype == np.float64:
                value = value.astype(np.float32)
            return [_Value(value)]
    raise UnsupportedOnnxOpError(f"{node.describe()}: only numeric Constant values are supported")


def _op_shape(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    x = _onnx_layout(args[0])
    if isinstance(x, np.ndarray) or x.shape.is_fully_defined():
        return [_Value(np.asarray(x.shape, np.int64))]
    return [_Value(tf.shape(x, out_type=tf.int64))]


def _op_gather(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    data, indices = _onnx_layout(args[0]), _onnx_layout(args[1])
    axis = node.attrs.get("axis", 0)
    if isinstance(data, np.ndarray) and isinstance(indices, np.ndarray):
        return [_Value(np.asarray(np.take(data, indices, axis=axis)))]
    return [_Value(tf.gather(data, indices, axis=axis))]


def _axes(model: OnnxModel, node: _Node, args: list) -> list[int] | None:
    if len(args) > 1 and args[1] is not None:
        axes = _static(args[1].data)
        if axes is None:
            raise UnsupportedOnnxOpError(f"{node.describe()}: axes must be constant")
        return [int(a) for a in axes]
    return node.attrs.get("axes")


def _op_unsqueeze(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    x, axes = _onnx_layout(args[0]), _axes(model, node, args)
    rank = _rank(x) + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a) if isinstance(x, np.ndarray) else tf.expand_dims(x, a)
    return [_Value(x)]


def _op_squeeze(model: OnnxModel, node: _Node, args: list) -> list[_Value]:
    x, axes = _onnx_layout(args[0]), _axes(model, node, args)
    squeeze = np.squeeze if isinstance(x, np.ndarray) else tf.squeeze
    return [_Value(squeeze(x, None if axes is None else tuple(axes)))]


SUPPORTED_OPS: dict[str, _Op] = {
    "Add": _binary(tf.add), "Sub": _binary(tf.subtract), "Mul": _binary(tf.multiply),
    "Div": _binary(tf.divide), "Pow": _binary(tf.pow),
    "Relu": _unary(lambda x, a: tf.nn.relu(x)), "Sigmoid": _unary(lambda x, a: tf.sigmoid(x)),
    "Tanh": _unary(lambda x, a: tf.tanh(x)), "Identity": _unary(lambda x, a: tf.identity(x)),
    "Dropout": _unary(lambda x, a: tf.identity(x)),
    "LeakyRelu": _unary(lambda x, a: tf.nn.leaky_relu(x, a.get("alpha", 0.01))),
    "Clip": _op_clip, "PRelu": _op_prelu,
    "BatchNormalization": _op_batch_norm, "Conv": _op_conv,
    "MaxPool": _op_max_pool, "AveragePool": _op_average_pool,
    "GlobalAveragePool": _global_pool(tf.reduce_mean),
    "GlobalMaxPool": _global_pool(tf.reduce_max),
    "Flatten": _op_flatten, "Reshape": _op_reshape, "Transpose": _op_transpose,
    "Concat": _op_concat, "Gemm": _op_gemm, "MatMul": _op_matmul,
    "Constant": _op_constant, "Shape": _op_shape, "Gather": _op_gather,
    "Unsqueeze": _op_unsqueeze, "Squeeze": _op_squeeze,
}
"""ONNX op type -> implementation. Ops outside this table raise UnsupportedOnnxOpError."""
