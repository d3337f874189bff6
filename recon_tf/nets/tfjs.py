"""Load TF.js "graph-model" directories into callable TensorFlow functions.

A TF.js graph model is a ``model.json`` (any ``*.json`` name) holding

* ``modelTopology``: a ``GraphDef`` in protobuf-JSON form whose ``Const``
  nodes carry no values, and
* ``weightsManifest``: groups of weights, each group stored as the
  concatenation of its ``.bin`` shards, in manifest order. A weight may be
  quantised: ``float16`` (IEEE half), or ``uint8`` / ``uint16`` with
  ``value = q * scale + min``.

:func:`load_graph_def` turns that into a plain ``tf.compat.v1.GraphDef``:
weights are written into ``Const`` nodes, device pins are dropped and the
TF.js-only ops are rewritten with standard, differentiable TF ops:

* ``Prelu(x, a)`` → ``Relu(x) − a·Relu(−x)``. The TF.js converter folds the
  Keras graph's ``Neg(alpha)`` and stores the result in a constant still named
  ``.../Neg``, but that constant holds ``a`` itself, not ``−a``. Checked on
  FaceMesh (whose stored slopes have both signs, in about [−1.6, 1.4]): with
  ``a`` its outer eye corners on the three iBUG photos with ground truth are
  off by 4–10 % of the eye distance on average, with ``−a`` by 21–47 %.
* ``_FusedConv2D``, ``FusedDepthwiseConv2dNative`` (and TF's own
  ``_FusedDepthwiseConv2dNative``) and ``_FusedMatMul`` → the plain op
  followed by ``BiasAdd`` / inference ``FusedBatchNormV3`` and the fused
  activation (``Relu``, ``Relu6``, ``Elu``, ``Selu``, ``Sigmoid``, ``Tanh``,
  ``LeakyRelu``, ``Prelu``). TF registers kernels for some fused ops but no
  gradients, and they need a ``TArgs`` attr that TF.js omits; splitting them
  avoids both problems.

:func:`load_graph_model` imports the result with
``tf.compat.v1.wrap_function`` + ``tf.graph_util.import_graph_def`` and prunes
it to a concrete function from one input tensor to named outputs; gradients
with respect to the input flow through it. Loaded models are cached per
process.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from recon_tf.assets import AssetMissingError

_NUMPY_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_UNARY_ACTIVATIONS = ("Relu", "Relu6", "Elu", "Selu", "Sigmoid", "Tanh")
_FUSED_BASE_OPS = {
    "_FusedConv2D": "Conv2D",
    "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative",
    "_FusedDepthwiseConv2dNative": "DepthwiseConv2dNative",
    "_FusedMatMul": "MatMul",
}
# Attributes the plain op accepts (everything else on the fused node is dropped).
_BASE_ATTRS = {
    "Conv2D": ("T", "strides", "padding", "explicit_paddings", "data_format", "dilations",
               "use_cudnn_on_gpu"),
    "DepthwiseConv2dNative": ("T", "strides", "padding", "explicit_paddings", "data_format",
                              "dilations"),
    "MatMul": ("T", "transpose_a", "transpose_b"),
}


def find_model_json(model_dir: str) -> str:
    """The model JSON of a TF.js graph-model directory.

    Args:
      model_dir: a directory holding ``model.json`` (or exactly one ``*.json``),
        or the path of the JSON file itself.
    Raises:
      AssetMissingError: the path or the JSON file does not exist.
    """
    if os.path.isfile(model_dir):
        return model_dir
    if not os.path.isdir(model_dir):
        raise AssetMissingError(f"Missing TF.js graph model: {model_dir} does not exist.")
    default = os.path.join(model_dir, "model.json")
    if os.path.isfile(default):
        return default
    candidates = sorted(glob.glob(os.path.join(model_dir, "*.json")))
    if len(candidates) != 1:
        raise AssetMissingError(
            f"Missing TF.js graph model: {default} (found {len(candidates)} *.json files "
            f"in {model_dir}; pass the JSON file's path).")
    return candidates[0]


def read_weights(model_json: Mapping, model_dir: str) -> dict[str, np.ndarray]:
    """Read and dequantise every weight of a TF.js weights manifest.

    Args:
      model_json: the parsed ``model.json``.
      model_dir: directory the shard paths are relative to.
    Returns:
      name → array with the manifest's shape and its (original) dtype:
      float32, int32 or bool.
    Raises:
      AssetMissingError: a ``.bin`` shard is missing (the message names it).
      ValueError: a shard is too short, or a dtype is unsupported.
    """
    weights: dict[str, np.ndarray] = {}
    for group in model_json.get("weightsManifest", []):
        chunks = []
        for rel in group["paths"]:
            path = os.path.join(model_dir, rel)
            if not os.path.isfile(path):
                raise AssetMissingError(f"Missing TF.js weight shard: {path}.")
            with open(path, "rb") as f:
                chunks.append(f.read())
        data = b"".join(chunks)
        offset = 0
        for spec in group["weights"]:
            array, offset = _read_weight(spec, data, offset)
            weights[spec["name"]] = array
        if offset != len(data):
            raise ValueError(f"weight shards {group['paths']} hold {len(data)} bytes, "
                             f"the manifest describes {offset}")
    return weights


def _read_weight(spec: Mapping, data: bytes, offset: int) -> tuple[np.ndarray, int]:
    """Decode one manifest entry starting at ``offset``; returns (array, next offset)."""
    name, dtype = spec["name"], spec["dtype"]
    if dtype not in _NUMPY_DTYPES:
        raise ValueError(f"weight {name!r}: unsupported dtype {dtype!r}")
    shape = [int(d) for d in spec["shape"]]
    count = int(np.prod(shape, dtype=np.int64))
    quant = spec.get("quantization")
    stored = np.dtype(_QUANT_DTYPES[quant["dtype"]] if quant else _NUMPY_DTYPES[dtype])
    size = count * stored.itemsize
    if offset + size > len(data):
        raise ValueError(f"weight {name!r} runs past the end of its shards")
    raw = np.frombuffer(data, stored.newbyteorder("<"), count, offset)
    if quant and quant["dtype"] != "float16":
        values = raw.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
    else:
        values = raw
    target = _NUMPY_DTYPES[dtype]
    if np.issubdtype(target, np.integer) and values.dtype.kind == "f":
        values = np.round(values)
    return values.astype(target).reshape(shape), offset + size


def _attr_str(node: tf.compat.v1.NodeDef, key: str, default: str = "") -> str:
    return node.attr[key].s.decode() if key in node.attr else default


def _new_node(name: str, op: str, inputs: Sequence[str], dtype_attr: tf.compat.v1.AttrValue,
              **attrs: tf.compat.v1.AttrValue) -> tf.compat.v1.NodeDef:
    node = tf.compat.v1.NodeDef(name=name, op=op, input=list(inputs))
    node.attr["T"].CopyFrom(dtype_attr)
    for key, value in attrs.items():
        node.attr[key].CopyFrom(value)
    return node


def _prelu_nodes(name: str, x: str, alpha: str,
                 dtype_attr: tf.compat.v1.AttrValue) -> list[tf.compat.v1.NodeDef]:
    """``name`` = Relu(x) − alpha·Relu(−x), with helper nodes under ``name/tfjs_prelu/``."""
    scope = f"{name}/tfjs_prelu"
    return [
        _new_node(f"{scope}/pos", "Relu", [x], dtype_attr),
        _new_node(f"{scope}/neg_x", "Neg", [x], dtype_attr),
        _new_node(f"{scope}/neg", "Relu", [f"{scope}/neg_x"], dtype_attr),
        _new_node(f"{scope}/scaled_neg", "Mul", [alpha, f"{scope}/neg"], dtype_attr),
        _new_node(name, "Sub", [f"{scope}/pos", f"{scope}/scaled_neg"], dtype_attr),
    ]


def _split_fused(node: tf.compat.v1.NodeDef) -> list[tf.compat.v1.NodeDef]:
    """Replace a fused conv / matmul node by plain ops; the last one keeps its name."""
    base_op = _FUSED_BASE_OPS[node.op]
    data_inputs = [i for i in node.input if not i.startswith("^")]
    controls = [i for i in node.input if i.startswith("^")]
    fused = [s.decode() for s in node.attr["fused_ops"].list.s]
    args = data_inputs[2:]
    dtype_attr = tf.compat.v1.AttrValue(type=node.attr["T"].type if "T" in node.attr
                                        else tf.float32.as_datatype_enum)
    scope = f"{node.name}/tfjs_fused"
    base = tf.compat.v1.NodeDef(name=f"{scope}/{base_op}", op=base_op,
                                input=data_inputs[:2] + controls)
    for key in _BASE_ATTRS[base_op]:
        if key in node.attr:
            base.attr[key].CopyFrom(node.attr[key])
    base.attr["T"].CopyFrom(dtype_attr)
    out: list[tf.compat.v1.NodeDef] = [base]
    data_format = node.attr["data_format"] if "data_format" in node.attr else None
    for k, op in enumerate(fused):
        prev = out[-1].name
        name = node.name if k == len(fused) - 1 else f"{scope}/{k}_{op}"
        if op == "BiasAdd":
            bias = _new_node(name, "BiasAdd", [prev, args.pop(0)], dtype_attr)
            if data_format is not None:
                bias.attr["data_format"].CopyFrom(data_format)
            out.append(bias)
        elif op == "FusedBatchNorm":
            scale, offset, mean, var = (args.pop(0) for _ in range(4))
            bn = _new_node(name, "FusedBatchNormV3", [prev, scale, offset, mean, var],
                           dtype_attr, U=dtype_attr,
                           epsilon=tf.compat.v1.AttrValue(f=node.attr["epsilon"].f),
                           is_training=tf.compat.v1.AttrValue(b=False))
            if data_format is not None:
                bn.attr["data_format"].CopyFrom(data_format)
            out.append(bn)
        elif op in _UNARY_ACTIVATIONS:
            out.append(_new_node(name, op, [prev], dtype_attr))
        elif op == "LeakyRelu":
            alpha = node.attr["leakyrelu_alpha"].f if "leakyrelu_alpha" in node.attr else 0.2
            out.append(_new_node(name, "LeakyRelu", [prev], dtype_attr,
                                 alpha=tf.compat.v1.AttrValue(f=alpha)))
        elif op == "Prelu":
            out.extend(_prelu_nodes(name, prev, args.pop(0), dtype_attr))
        else:
            raise NotImplementedError(f"node {node.name!r}: unsupported fused op {op!r}")
    if not fused:
        base.name = node.name
    return out


def rewrite_tfjs_ops(graph_def: tf.compat.v1.GraphDef) -> tf.compat.v1.GraphDef:
    """Rewrite TF.js-only ops (``Prelu``, fused conv/matmul) as standard TF ops.

    Node names that other nodes consume are kept (the replacement's last node
    takes the original name), so the graph's tensor names stay valid. Device
    pins are cleared. Returns a new ``GraphDef``; the argument is unchanged.
    """
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op == "Prelu":
            x, alpha = [i for i in node.input if not i.startswith("^")]
            dtype_attr = tf.compat.v1.AttrValue(type=node.attr["T"].type if "T" in node.attr
                                                else tf.float32.as_datatype_enum)
            new_nodes = _prelu_nodes(node.name, x, alpha, dtype_attr)
            new_nodes[0].input.extend(i for i in node.input if i.startswith("^"))
        elif node.op in _FUSED_BASE_OPS:
            new_nodes = _split_fused(node)
        else:
            copy = tf.compat.v1.NodeDef()
            copy.CopyFrom(node)
            new_nodes = [copy]
        for new in new_nodes:
            new.device = ""
        out.node.extend(new_nodes)
    return out


def load_graph_def(model_dir: str) -> tuple[tf.compat.v1.GraphDef, dict]:
    """Parse a TF.js graph model into a standard, importable ``GraphDef``.

    Args:
      model_dir: the model directory or its JSON file (see :func:`find_model_json`).
    Returns:
      (graph_def with weights as ``Const`` values and TF.js ops rewritten,
      the model JSON's ``signature`` dict, empty if absent).
    """
    json_path = find_model_json(model_dir)
    with open(json_path, encoding="utf-8") as f:
        model_json = json.load(f)
    if model_json.get("format", "graph-model") != "graph-model":
        raise ValueError(f"{json_path}: format {model_json.get('format')!r}, "
                         f"expected 'graph-model'")
    graph_def = json_format.ParseDict(model_json["modelTopology"], tf.compat.v1.GraphDef())
    weights = read_weights(model_json, os.path.dirname(json_path))
    nodes = {node.name: node for node in graph_def.node}
    for name, value in weights.items():
        node = nodes.get(name)
        if node is None:
            node = graph_def.node.add(name=name, op="Const")
        elif node.op != "Const":
            raise ValueError(f"weight {name!r} names a {node.op} node, not a Const")
        node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    return rewrite_tfjs_ops(graph_def), dict(model_json.get("signature") or {})


def _tensor_name(name: str) -> str:
    return name if ":" in name else f"{name}:0"


class GraphModel:
    """A frozen TF.js graph model as a function of one input tensor.

    Call it with the input tensor (dtype and shape as the model's input
    placeholder, e.g. float32 [N, 224, 224, 3]); it returns a dict from each
    requested output name (as given) to its tensor. Differentiable with
    respect to the input. Use :func:`load_graph_model` to build one.

    Attributes:
      input_name: tensor name of the input, e.g. ``"input_1:0"``.
      output_names: the requested output names, in order.
      input_shape: the input placeholder's static shape (``None`` = any).
      input_dtype: its dtype.
    """

    def __init__(self, graph_def: tf.compat.v1.GraphDef, input_name: str,
                 output_names: Sequence[str]):
        def _import() -> None:
            tf.graph_util.import_graph_def(graph_def, name="")

        wrapped = tf.compat.v1.wrap_function(_import, [])
        graph = wrapped.graph
        feed = graph.get_tensor_by_name(_tensor_name(input_name))
        fetches = [graph.get_tensor_by_name(_tensor_name(n)) for n in output_names]
        self.input_name = feed.name
        self.output_names = tuple(output_names)
        self.input_shape = tuple(feed.shape.as_list()) if feed.shape.rank is not None else None
        self.input_dtype = feed.dtype
        self._fn = wrapped.prune(feed, fetches)

    def __call__(self, inputs: tf.Tensor | np.ndarray) -> dict[str, tf.Tensor]:
        """Run the model.

        Args:
          inputs: the input tensor (converted to ``input_dtype``).
        Returns:
          output name → tensor.
        """
        x = tf.convert_to_tensor(inputs, dtype=self.input_dtype)
        return dict(zip(self.output_names, self._fn(x)))


def load_graph_model(model_dir: str, input_name: str | None = None,
                     output_names: Sequence[str] | None = None) -> GraphModel:
    """Load (once per process) a TF.js graph model as a :class:`GraphModel`.

    Args:
      model_dir: the model directory (holding ``model.json``) or the JSON file.
      input_name: input tensor or node name; default: the signature's single input.
      output_names: tensor or node names to return; default: the signature's outputs.
    Returns:
      A callable ``model(x) -> {name: tensor}``; cached on the resolved JSON
      path and the names, so loading the same model again is free.
    Raises:
      AssetMissingError: the JSON file or a weight shard is missing.
    """
    json_path = os.path.realpath(find_model_json(model_dir))
    names = tuple(output_names) if output_names is not None else None
    return _load_cached(json_path, input_name, names)


@functools.lru_cache(maxsize=16)
def _load_cached(json_path: str, input_name: str | None,
                 output_names: tuple[str, ...] | None) -> GraphModel:
    graph_def, signature = load_graph_def(json_path)
    if input_name is None:
        inputs = list((signature.get("inputs") or {}).values())
        if len(inputs) != 1:
            raise ValueError(f"{json_path}: pass input_name (signature has {len(inputs)} inputs)")
        input_name = inputs[0]["name"]
    if output_names is None:
        outputs = (signature.get("outputs") or {}).values()
        output_names = tuple(o["name"] for o in outputs)
        if not output_names:
            raise ValueError(f"{json_path}: pass output_names (the signature lists none)")
    return GraphModel(graph_def, input_name, output_names)
