"""TF.js graph-model loader, identity networks (L_id) and FaceMesh."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from recon_tf import assets
from recon_tf.nets import tfjs

FACERES = "identity/faceres_tfjs/model.json"
FACEMESH = "landmarks/facemesh_tfjs/facemesh.json"
# Face boxes (x, y, w, h) found by MTCNN (recon_tf.preprocess.detect) in the shared photos.
BOXES = {
    "obama.jpg": (380, 86, 232, 329),
    "obama2.jpg": (184, 237, 278, 388),
    "biden.jpg": (432, 168, 280, 394),
}


def _require(relative: str) -> str:
    path = assets.asset_path(relative, must_exist=False)
    if not os.path.exists(path):
        pytest.skip(f"asset {relative} not found under {assets.assets_dir()}")
    return path


def _photo(name: str) -> np.ndarray:
    from PIL import Image

    path = _require(f"images/{name}")
    return np.asarray(Image.open(path).convert("RGB"))


def _face_crop(name: str, size: int = 224, margin: float = 1.2) -> np.ndarray:
    """float32 [size, size, 3] in [0, 1]: a square crop around the face box."""
    from recon_tf.nets.facemesh import box_crop
    from recon_tf.preprocess.align import crop_matrix, warp_affine

    center, side = box_crop(BOXES[name], margin)
    image = _photo(f"faces/{name}")
    return warp_affine(image, crop_matrix(center, side, size=size), (size, size)) / np.float32(255)


# ---------------------------------------------------------------------------
# Loader on hand-made graphs


def _const(name, value):
    value = np.asarray(value)
    return {"name": name, "op": "Const",
            "attr": {"dtype": {"type": tf.as_dtype(value.dtype).as_datatype_enum},
                     "value": {"tensor": {"dtype": tf.as_dtype(value.dtype).as_datatype_enum}}}}


def _fused_ops(*ops):
    import base64

    return {"list": {"s": [base64.b64encode(op.encode()).decode() for op in ops]}}


def _write_model(directory, nodes, weights, quantization=None, shards=1):
    """A TF.js graph-model directory: model.json + ``shards`` .bin files."""
    manifest, blob = [], b""
    for name, value in weights.items():
        value = np.asarray(value)
        entry = {"name": name, "shape": list(value.shape), "dtype": str(value.dtype)}
        if quantization == "float16" and value.dtype == np.float32:
            data = value.astype("<f2").tobytes()
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        elif quantization == "uint8" and value.dtype == np.float32:
            lo, hi = float(value.min()), float(value.max())
            scale = (hi - lo) / 255 or 1.0
            data = np.round((value - lo) / scale).astype(np.uint8).tobytes()
            entry["quantization"] = {"dtype": "uint8", "scale": scale, "min": lo,
                                     "original_dtype": "float32"}
        else:
            data = value.astype(value.dtype.newbyteorder("<")).tobytes()
        manifest.append(entry)
        blob += data
    cuts = np.linspace(0, len(blob), shards + 1).astype(int)
    paths = []
    for k in range(shards):
        paths.append(f"group1-shard{k + 1}of{shards}.bin")
        with open(os.path.join(directory, paths[-1]), "wb") as f:
            f.write(blob[cuts[k]:cuts[k + 1]])
    model = {"format": "graph-model",
             "modelTopology": {"node": nodes, "versions": {"producer": 1395}},
             "weightsManifest": [{"paths": paths, "weights": manifest}]}
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(model, f)
    return str(directory)


def _placeholder(name, shape):
    return {"name": name, "op": "Placeholder",
            "attr": {"dtype": {"type": "DT_FLOAT"},
                     "shape": {"shape": {"dim": [{"size": str(d)} for d in shape]}}}}


def _conv_graph(rng, fused_op="_FusedConv2D", ops=("BiasAdd", "Prelu")):
    """x [-1, 6, 6, 3] → fused conv (3×3, 4 channels) → Prelu; returns (nodes, weights)."""
    depthwise = fused_op != "_FusedConv2D"
    out_channels = 3 if depthwise else 4
    w = rng.normal(size=(3, 3, 3, 1 if depthwise else 4)).astype(np.float32)
    weights = {"w": w, "b": rng.normal(size=out_channels).astype(np.float32),
               "alpha": rng.uniform(-0.5, 1.0, size=(1, 1, out_channels)).astype(np.float32)}
    args = ["b", "alpha"][:sum(op in ("BiasAdd", "Prelu") for op in ops)]
    conv = {"name": "conv", "op": fused_op, "input": ["x", "w", *args],
            "device": "/device:CPU:0",
            "attr": {"T": {"type": "DT_FLOAT"}, "strides": {"list": {"i": ["1", "1", "1", "1"]}},
                     "padding": {"s": "U0FNRQ=="}, "data_format": {"s": "TkhXQw=="},
                     "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
                     "fused_ops": _fused_ops(*ops), "num_args": {"i": str(len(args))},
                     "epsilon": {"f": 0}}}
    nodes = [_placeholder("x", [-1, 6, 6, 3])] + [_const(k, v) for k, v in weights.items()]
    nodes += [conv, {"name": "out", "op": "Prelu", "input": ["conv", "alpha"]}]
    return nodes, weights


def _np_prelu(x, a):
    return np.maximum(x, 0) - a * np.maximum(-x, 0)


def _np_reference(x, weights, depthwise, ops):
    w = weights["w"]
    if depthwise:
        y = tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME").numpy()
    else:
        y = tf.nn.conv2d(x, w, 1, "SAME").numpy()
    for op in ops:
        y = {"BiasAdd": lambda v: v + weights["b"], "Relu": lambda v: np.maximum(v, 0),
             "Relu6": lambda v: np.clip(v, 0, 6),
             "Prelu": lambda v: _np_prelu(v, weights["alpha"])}[op](y)
    return _np_prelu(y, weights["alpha"])


@pytest.mark.parametrize("fused_op,ops", [
    ("_FusedConv2D", ("BiasAdd", "Prelu")),
    ("_FusedConv2D", ("BiasAdd", "Relu6")),
    ("FusedDepthwiseConv2dNative", ("BiasAdd", "Relu")),
    ("_FusedConv2D", ("BiasAdd",)),
])
def test_rewritten_graph_matches_numpy(tmp_path, fused_op, ops):
    rng = np.random.default_rng(0)
    nodes, weights = _conv_graph(rng, fused_op, ops)
    model = tfjs.load_graph_model(_write_model(tmp_path, nodes, weights), "x", ["out"])
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    got = model(x)["out"].numpy()
    want = _np_reference(x, weights, fused_op != "_FusedConv2D", ops)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_rewrite_removes_tfjs_ops_and_devices(tmp_path):
    nodes, weights = _conv_graph(np.random.default_rng(1))
    graph_def, _ = tfjs.load_graph_def(_write_model(tmp_path, nodes, weights))
    ops = {n.op for n in graph_def.node}
    assert not ops & {"Prelu", "_FusedConv2D"}
    assert {"Conv2D", "BiasAdd", "Relu", "Neg", "Mul", "Sub"} <= ops
    assert all(not n.device for n in graph_def.node)
    # Consumers still find their inputs: the replacement keeps the node's name.
    assert sum(n.name == "conv" for n in graph_def.node) == 1


@pytest.mark.parametrize("ops", [("BiasAdd", "Relu"), ("FusedBatchNorm", "Relu6")])
def test_split_matches_tf_fused_kernel(ops):
    """The split of a fused conv equals TF's own _FusedConv2D kernel (given its TArgs attr)."""
    from google.protobuf import json_format

    rng = np.random.default_rng(2)
    nodes, weights = _conv_graph(rng, ops=("BiasAdd", "Relu"))
    conv = next(n for n in nodes if n["name"] == "conv")
    conv["attr"]["fused_ops"] = _fused_ops(*ops)
    if ops[0] == "FusedBatchNorm":
        for name in ("scale", "offset", "mean", "var"):
            weights[name] = rng.uniform(0.5, 1.5, 4).astype(np.float32)
            nodes.append(_const(name, weights[name]))
        conv["input"] = ["x", "w", "scale", "offset", "mean", "var"]
        conv["attr"]["epsilon"] = {"f": 1e-3}
    args = len(conv["input"]) - 2
    conv["attr"]["num_args"] = {"i": str(args)}
    graph_def = tf.compat.v1.GraphDef()
    json_format.ParseDict({"node": [n for n in nodes if n["op"] != "Prelu"]}, graph_def)
    for node in graph_def.node:
        if node.name in weights:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name]))
        if node.op == "_FusedConv2D":
            node.attr["TArgs"].list.type.extend([tf.float32.as_datatype_enum] * args)
        node.device = ""
    x = rng.normal(size=(1, 6, 6, 3)).astype(np.float32)
    native = tfjs.GraphModel(graph_def, "x", ["conv"])(x)["conv"].numpy()
    split = tfjs.GraphModel(tfjs.rewrite_tfjs_ops(graph_def), "x", ["conv"])(x)["conv"].numpy()
    assert np.ptp(native) > 0.1
    np.testing.assert_allclose(split, native, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quantization,tol", [(None, 1e-6), ("float16", 1e-2), ("uint8", 5e-2)])
def test_quantised_weights_and_shards(tmp_path, quantization, tol):
    """A matmul model with quantised weights across 3 shards; gradients reach the input."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(5, 4)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    shape = np.array([-1, 2, 2], np.int32)
    nodes = [_placeholder("x", [-1, 5]), _const("w", w), _const("b", b), _const("shape", shape),
             {"name": "mm", "op": "_FusedMatMul", "input": ["x", "w", "b"],
              "attr": {"T": {"type": "DT_FLOAT"}, "transpose_a": {"b": False},
                       "transpose_b": {"b": False}, "fused_ops": _fused_ops("BiasAdd", "Relu"),
                       "num_args": {"i": "1"}}},
             {"name": "y", "op": "Reshape", "input": ["mm", "shape"],
              "attr": {"T": {"type": "DT_FLOAT"}, "Tshape": {"type": "DT_INT32"}}}]
    path = _write_model(tmp_path, nodes, {"w": w, "b": b, "shape": shape}, quantization, shards=3)
    weights = tfjs.read_weights(json.load(open(os.path.join(path, "model.json"))), path)
    np.testing.assert_array_equal(weights["shape"], shape)
    np.testing.assert_allclose(weights["w"], w, atol=tol * 4, rtol=tol)
    model = tfjs.load_graph_model(path, "x:0", ["y:0"])
    x = tf.constant(rng.normal(size=(3, 5)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = model(x)["y:0"]
        total = tf.reduce_sum(y)
    np.testing.assert_allclose(y.numpy(), np.maximum(x.numpy() @ w + b, 0).reshape(-1, 2, 2),
                               atol=tol * 10, rtol=tol)
    grad = tape.gradient(total, x).numpy()
    want = (np.maximum(x.numpy() @ w + b, 0) > 0).astype(np.float32) @ w.T
    np.testing.assert_allclose(grad, want, atol=tol * 10, rtol=tol)


def test_missing_shard_names_the_file(tmp_path):
    nodes, weights = _conv_graph(np.random.default_rng(4))
    path = _write_model(tmp_path, nodes, weights)
    os.remove(os.path.join(path, "group1-shard1of1.bin"))
    with pytest.raises(assets.AssetMissingError, match="group1-shard1of1.bin"):
        tfjs.load_graph_def(path)


def test_missing_assets_raise(tmp_path, monkeypatch):
    from recon_tf.nets.facemesh import FaceMesh
    from recon_tf.nets.identity import make_identity_net

    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path))
    with pytest.raises(assets.AssetMissingError, match="faceres_tfjs/model.json"):
        make_identity_net("faceres")
    with pytest.raises(assets.AssetMissingError, match="facemesh.json"):
        FaceMesh()


def test_unknown_identity_net():
    from recon_tf.nets.identity import make_identity_net

    with pytest.raises(ValueError, match="faceres.*mobilefacenet.*vggface"):
        make_identity_net("arcface")


def test_factory_dispatches_lazily(monkeypatch):
    """"mobilefacenet" / "vggface" come from their own modules, imported only when asked."""
    import sys
    import types

    from recon_tf.nets.identity import make_identity_net

    for module, cls in (("mobilefacenet", "MobileFaceNet"), ("vggface", "VGGFace")):
        fake = types.ModuleType(f"recon_tf.nets.{module}")
        setattr(fake, cls, lambda path=None, cls=cls: (cls, path))
        monkeypatch.setitem(sys.modules, f"recon_tf.nets.{module}", fake)
        assert make_identity_net(module.upper(), "/some/file") == (cls, "/some/file")


def test_identity_distance_identity():
    from recon_tf.nets.identity import identity_distance

    rng = np.random.default_rng(5)
    f1, f2 = rng.normal(size=(2, 4, 16)).astype(np.float32)
    d = identity_distance(f1, f2).numpy()
    u1 = f1 / np.linalg.norm(f1, axis=1, keepdims=True)
    u2 = f2 / np.linalg.norm(f2, axis=1, keepdims=True)
    np.testing.assert_allclose(d, 0.5 * np.sum((u1 - u2) ** 2, 1), atol=1e-6)
    np.testing.assert_allclose(d, 1 - np.sum(u1 * u2, 1), atol=1e-6)
    np.testing.assert_allclose(identity_distance(f1, 3 * f1).numpy(), 0, atol=1e-6)


# ---------------------------------------------------------------------------
# FaceResNet on real photos


@pytest.fixture(scope="module")
def faceres():
    from recon_tf.nets.identity import IdentityNet, make_identity_net

    _require(FACERES)
    net = make_identity_net("faceres")
    assert isinstance(net, IdentityNet)
    return net


def test_faceres_graph_names():
    graph_def, signature = tfjs.load_graph_def(_require(FACERES))
    names = {n.name: n for n in graph_def.node}
    assert names["input_1"].op == "Placeholder"
    assert names["global_pooling/Mean"].op == "Mean"
    assert "global_pooling/Mean" in signature["outputs"]


def test_faceres_separates_people(faceres):
    crops = np.stack([_face_crop(n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg")])
    mirrored = crops[:, :, ::-1]
    # Any input size: the net resizes (here 224 → 256 and a 160² batch).
    feats = faceres(tf.image.resize(np.concatenate([crops, mirrored]), (256, 256))).numpy()
    assert feats.shape == (6, faceres.feature_dim) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    cos = feats @ feats.T
    assert np.all(np.diag(cos[:3, 3:]) > 0.8), np.diag(cos[:3, 3:])
    obama_obama, obama_biden, obama2_biden = cos[0, 1], cos[0, 2], cos[1, 2]
    assert obama_biden < 0.6 and obama2_biden < 0.6
    assert obama_obama > max(obama_biden, obama2_biden) + 0.1
    small = faceres(tf.image.resize(crops, (160, 160))).numpy()
    assert np.all(np.sum(small * feats[:3], 1) > 0.9)


def test_faceres_gradient(faceres):
    from recon_tf.nets.identity import identity_distance

    crops = np.stack([_face_crop("obama.jpg"), _face_crop("biden.jpg")])
    target = faceres(crops[::-1])
    x = tf.constant(crops)

    @tf.function
    def loss_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(identity_distance(faceres(x), target))
        return loss, tape.gradient(loss, x)

    loss, grad = loss_and_grad(x)
    grad = grad.numpy()
    assert 0 < float(loss) < 1
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    # A small step against the gradient lowers the loss (the gradient is the loss's).
    step = x - 0.01 * grad / np.abs(grad).max()
    assert float(loss_and_grad(step)[0]) < float(loss)


# ---------------------------------------------------------------------------
# FaceMesh


@pytest.fixture(scope="module")
def facemesh():
    from recon_tf.nets.facemesh import FaceMesh

    _require(FACEMESH)
    return FaceMesh()


def _einstein():
    from recon_tf.preprocess.landmarks import read_pts

    image = _photo("faces_68pts/einstein.jpg")
    truth = read_pts(_require("images/faces_68pts/einstein.pts"))
    lo, hi = truth.min(0), truth.max(0)
    return image, truth, (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])


def _eye_errors(points, truth):
    """Errors of (outer corners 33/263, inner corners 133/362) / outer-eye distance."""
    eye = np.linalg.norm(truth[36] - truth[45])
    pairs = [(33, 36), (263, 45), (133, 39), (362, 42)]
    return np.array([np.linalg.norm(points[a, :2] - truth[b]) for a, b in pairs]) / eye


def test_facemesh_on_einstein(facemesh):
    image, truth, box = _einstein()
    coarse, coarse_score = facemesh.detect(image, box, refine=False)
    points, score = facemesh.detect(image, box)
    assert points.shape == (468, 3) and points.dtype == np.float32
    assert score > 0.9 and coarse_score > 0.9
    err, coarse_err = _eye_errors(points, truth), _eye_errors(coarse, truth)
    # MediaPipe's outer corners sit ~3-5 px (of 45) outside iBUG's; inner ones match closely.
    assert np.all(err[:2] < 0.15) and np.all(err[2:] < 0.08), err
    assert err.mean() <= coarse_err.mean() + 0.01, (err, coarse_err)
    # z is in image pixels too: the face's depth range is a sizeable fraction of its width.
    width = np.ptp(points[:, 0])
    assert 0.3 * width < np.ptp(points[:, 2]) < 1.5 * width


def test_facemesh_mapping_is_exact(facemesh):
    """A scaled, shifted copy of the photo gives the same points after mapping back."""
    import cv2

    image, _, box = _einstein()
    half = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    padded = np.zeros((half.shape[0] + 40, half.shape[1] + 30, 3), np.uint8)
    padded[40:, 30:] = half
    # cv2.resize by 1/2: new = (old + 0.5) / 2 − 0.5 (pixel centres); then shift (30, 40).
    new_box = ((box[0] + 0.5) / 2 - 0.5 + 30, (box[1] + 0.5) / 2 - 0.5 + 40,
               box[2] / 2, box[3] / 2)
    batch, scores = facemesh.detect_batch([image, padded], [box, new_box])
    back = batch[1].copy()
    back[:, 0] = (back[:, 0] - 30 + 0.5) * 2 - 0.5
    back[:, 1] = (back[:, 1] - 40 + 0.5) * 2 - 0.5
    back[:, 2] *= 2
    eye = np.linalg.norm(batch[0, 33, :2] - batch[0, 263, :2])
    assert np.median(np.linalg.norm(back[:, :2] - batch[0, :, :2], axis=1)) < 0.03 * eye
    assert scores.shape == (2,)


def test_facemesh_crop_roundtrip():
    from recon_tf.nets.facemesh import mesh_crop
    from recon_tf.preprocess.align import apply_transform, crop_matrix

    m = crop_matrix((100.0, 50.0), 96.0, angle=np.pi / 6, size=192)
    # The centre goes to the crop's centre pixel, the eye direction to +x.
    np.testing.assert_allclose(apply_transform(m, [[100.0, 50.0]]), [[95.5, 95.5]], atol=1e-5)
    d = apply_transform(m, [[100 + np.cos(np.pi / 6), 50 + np.sin(np.pi / 6)]]) - 95.5
    np.testing.assert_allclose(d, [[2.0, 0.0]], atol=1e-5)
    pts = np.zeros((468, 3))
    pts[:, :2] = np.random.default_rng(6).uniform(0, 10, (468, 2))
    pts[33, :2], pts[263, :2] = (0, 0), (10, 10)
    _, _, angle = mesh_crop(pts)
    assert angle == pytest.approx(np.pi / 4)


def test_facemesh_first_crop_levelled_for_a_head_on_its_side(facemesh):
    """Einstein's photo turned by 90°: an upright first crop loses the face, one
    levelled by the eye line (``angle``) finds it as in the upright photo."""
    from recon_tf.data.photo_variants import photo_variant
    from recon_tf.preprocess.landmarks import eye_roll

    image, truth, _ = _einstein()
    turned, points = photo_variant("rot90", image, truth)
    lo, hi = points.min(0), points.max(0)
    box = (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])
    _, upright_score = facemesh.detect(turned, box)
    found, score = facemesh.detect(turned, box, angle=eye_roll(points))
    assert upright_score < 0.5 < 0.9 < score
    assert np.all(_eye_errors(found, points)[2:] < 0.08)
