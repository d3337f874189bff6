"""ONNX → TF evaluator, MobileFaceNet identity features, and the VGG-Face .h5 loader."""

import os

import cv2
import h5py
import numpy as np
import pytest
import tensorflow as tf

from recon_tf import assets
from recon_tf.assets import AssetMissingError
from recon_tf.nets import onnx_tf, vggface

MFN_ASSET = "identity/mobilefacenet_onnx/mobilefacenet.onnx"


# ---------------------------------------------------------------- helpers


def _asset_or_skip(relative: str) -> str:
    path = assets.asset_path(relative, must_exist=False)
    if not os.path.exists(path):
        pytest.skip(f"asset absent: {path}")
    return path


def _ort(path: str):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _make_onnx(path: str, nodes: list[dict], inits: dict[str, np.ndarray],
               inputs: dict[str, tuple], outputs: list[str], opset: int = 13) -> str:
    """Write an ONNX file with the evaluator's own protobuf classes."""
    model = onnx_tf.onnx_proto_class()()
    model.ir_version = 7
    model.producer_name = "recon_tf-test"
    model.opset_import.add(domain="", version=opset)
    graph = model.graph
    graph.name = "test"
    for name, shape in inputs.items():
        vi = graph.input.add(name=name)
        vi.type.tensor_type.elem_type = 1
        for d in shape:
            vi.type.tensor_type.shape.dim.add(dim_value=d)
    for name in outputs:
        graph.output.add(name=name).type.tensor_type.elem_type = 1
    for name, arr in inits.items():
        arr = np.asarray(arr)
        t = graph.initializer.add(name=name, dims=arr.shape,
                                  data_type=7 if arr.dtype == np.int64 else 1)
        if name.startswith("fd_"):  # typed field instead of raw bytes
            t.float_data.extend(arr.ravel().tolist())
        else:
            t.raw_data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    for spec in nodes:
        node = graph.node.add(op_type=spec["op"], input=spec["in"], output=spec["out"],
                              name=spec.get("name", spec["out"][0]))
        for key, value in spec.get("attrs", {}).items():
            attr = node.attribute.add(name=key)
            if isinstance(value, str):
                attr.type, attr.s = 3, value.encode()
            elif isinstance(value, float):
                attr.type, attr.f = 1, value
            elif isinstance(value, int):
                attr.type, attr.i = 2, value
            else:
                attr.type = 7
                attr.ints.extend(value)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mfn_path():
    return _asset_or_skip(MFN_ASSET)


@pytest.fixture(scope="module")
def mfn(mfn_path):
    from recon_tf.nets.mobilefacenet import MobileFaceNet

    return MobileFaceNet(mfn_path)


@pytest.fixture(scope="module")
def faces():
    """112×112 RGB float crops in [0, 1] (MTCNN box, squared) of three photos."""
    folder = _asset_or_skip("images/faces")
    from recon_tf.preprocess.detect import FaceDetector
    from recon_tf.preprocess.image_io import load_image

    detector = FaceDetector()
    crops = {}
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            pytest.skip(f"asset absent: {path}")
        image = load_image(path).pixels
        box = detector.detect(image)[0].box
        side = float(max(box[2], box[3]))
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        s = 112.0 / side
        m = np.array([[s, 0, -(cx - side / 2) * s], [0, s, -(cy - side / 2) * s]], np.float32)
        crop = cv2.warpAffine(image, m, (112, 112), flags=cv2.INTER_AREA,
                              borderMode=cv2.BORDER_REPLICATE)
        crops[name] = crop.astype(np.float32) / 255.0
    return crops


# ---------------------------------------------------------------- ONNX evaluator


def test_onnx_matches_onnxruntime_random(mfn_path):
    sess = _ort(mfn_path)
    model = onnx_tf.load_onnx_model(mfn_path)
    assert model.input_names == ["input"] and model.input_shapes["input"] == (1, 3, 112, 112)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
    ref = sess.run(None, {"input": x})[0]
    out = model(x)[0].numpy()
    assert out.shape == ref.shape == (1, 128)
    assert np.abs(out - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    nhwc = model(x.transpose(0, 2, 3, 1), nhwc_inputs=True)[0].numpy()
    assert np.abs(nhwc - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    # A batch of 3 (the graph's Reshape bakes in batch 1) equals three single runs.
    xb = rng.uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)
    refs = np.concatenate([sess.run(None, {"input": xb[i:i + 1]})[0] for i in range(3)])
    outb = model(xb)[0].numpy()
    assert outb.shape == (3, 128)
    assert np.abs(outb - refs).max() < 1e-4 * max(1.0, np.abs(refs).max())


def test_onnx_extra_ops_match_onnxruntime(tmp_path):
    """Ops MobileFaceNet does not use, including layout-sensitive ones, against onnxruntime."""
    rng = np.random.default_rng(1)

    def r(*shape, scale=0.5):
        return (rng.normal(size=shape) * scale).astype(np.float32)

    inits = {
        "W1": r(6, 2, 3, 3), "B1": r(6), "bn_s": r(6) + 1, "bn_b": r(6), "bn_m": r(6),
        "bn_v": np.abs(r(6)) + 0.5, "slope": r(6, 1, 1), "Wd": r(12, 1, 3, 3), "Bd": r(12),
        "K": r(18, 1, 1), "two": np.array(2.0, np.float32), "Kp": np.abs(r(1, 18, 1, 1)) + 0.5,
        "Wg": r(5, 162), "Cg": r(5), "fd_Wm": r(18, 5), "lo": np.array(-0.3, np.float32),
        "i0": np.array(0, np.int64), "ax0": np.array([0], np.int64),
        "m1": np.array([-1], np.int64), "ax23": np.array([2, 3], np.int64),
    }
    nodes = [
        {"op": "Conv", "in": ["X", "W1", "B1"], "out": ["c1"],
         "attrs": {"group": 2, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}},
        {"op": "BatchNormalization", "in": ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], "out": ["b1"],
         "attrs": {"epsilon": 1e-3}},
        {"op": "PRelu", "in": ["b1", "slope"], "out": ["p1"]},
        {"op": "Conv", "in": ["p1", "Wd", "Bd"], "out": ["d1"],
         "attrs": {"group": 6, "strides": [2, 2], "pads": [0, 1, 1, 0]}},
        {"op": "MaxPool", "in": ["p1"], "out": ["mp"],
         "attrs": {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 1, 1]}},
        {"op": "Concat", "in": ["d1", "mp"], "out": ["cat"], "attrs": {"axis": 1}},
        {"op": "Sub", "in": ["cat", "K"], "out": ["s1"]},
        {"op": "Mul", "in": ["s1", "two"], "out": ["mu"]},
        {"op": "Div", "in": ["mu", "Kp"], "out": ["dv"]},
        {"op": "LeakyRelu", "in": ["dv"], "out": ["lr"], "attrs": {"alpha": 0.2}},
        {"op": "Transpose", "in": ["lr"], "out": ["tr"], "attrs": {"perm": [0, 2, 3, 1]}},
        {"op": "Flatten", "in": ["tr"], "out": ["fl"]},
        {"op": "Gemm", "in": ["fl", "Wg", "Cg"], "out": ["g"],
         "attrs": {"transB": 1, "alpha": 0.5, "beta": 2.0}},
        {"op": "GlobalAveragePool", "in": ["lr"], "out": ["gap"]},
        {"op": "Squeeze", "in": ["gap", "ax23"], "out": ["fl2"]},
        {"op": "MatMul", "in": ["fl2", "fd_Wm"], "out": ["mm"]},
        {"op": "MatMul", "in": ["tr", "fd_Wm"], "out": ["M4"]},  # rank 4 x rank 2
        {"op": "Sigmoid", "in": ["g"], "out": ["sg"]},
        {"op": "Tanh", "in": ["mm"], "out": ["th"]},
        {"op": "Add", "in": ["sg", "th"], "out": ["Y"]},
        {"op": "AveragePool", "in": ["p1"], "out": ["ap"],
         "attrs": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}},
        {"op": "Clip", "in": ["ap", "lo", ""], "out": ["Z"]},
        {"op": "Shape", "in": ["lr"], "out": ["sh"]},
        {"op": "Gather", "in": ["sh", "i0"], "out": ["n"]},
        {"op": "Unsqueeze", "in": ["n", "ax0"], "out": ["n1"]},
        {"op": "Concat", "in": ["n1", "m1"], "out": ["tgt"], "attrs": {"axis": 0}},
        {"op": "Reshape", "in": ["lr", "tgt"], "out": ["R"]},
        {"op": "AveragePool", "in": ["c1"], "out": ["as"],
         "attrs": {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}},
        {"op": "GlobalMaxPool", "in": ["as"], "out": ["gm"]},
        {"op": "Flatten", "in": ["gm"], "out": ["F"], "attrs": {"axis": -1}},
    ]
    outputs = ["Y", "Z", "R", "F", "M4"]
    path = _make_onnx(str(tmp_path / "ops.onnx"), nodes, inits, {"X": (2, 4, 6, 6)}, outputs)
    x = rng.normal(size=(2, 4, 6, 6)).astype(np.float32)
    refs = _ort(path).run(None, {"X": x})
    outs = onnx_tf.OnnxModel(path)(x)
    assert len(outs) == len(refs) == len(outputs)
    for name, ref, out in zip(outputs, refs, outs):
        assert out.shape == ref.shape, name
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5, err_msg=name)
    assert np.abs(refs[1]).max() > 0.1  # the comparison is not vacuous


def test_unsupported_op_is_named(tmp_path):
    path = _make_onnx(str(tmp_path / "erf.onnx"),
                      [{"op": "Relu", "in": ["X"], "out": ["h"]},
                       {"op": "Erf", "in": ["h"], "out": ["Y"], "name": "my_erf"}],
                      {}, {"X": (1, 3)}, ["Y"])
    _ort(path)  # a valid model: onnxruntime loads it
    with pytest.raises(onnx_tf.UnsupportedOnnxOpError, match=r"Erf \(e\.g\. node 'my_erf'\)"):
        onnx_tf.OnnxModel(path)


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(onnx_tf.OnnxFormatError):
        onnx_tf.OnnxModel(str(path))


# ---------------------------------------------------------------- MobileFaceNet


def test_mobilefacenet_features(mfn, faces, mfn_path):
    assert (mfn.name, mfn.input_size, mfn.feature_dim) == ("mobilefacenet", 112, 128)
    obama, obama2, biden = (faces[n] for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    batch = np.stack([obama, obama[:, ::-1], obama2, biden])
    f = mfn(tf.constant(batch)).numpy()
    assert f.shape == (4, 128) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    mirror, same, different = f[0] @ f[1], f[0] @ f[2], f[0] @ f[3]
    assert mirror > different + 0.3 and same > different, (mirror, same, different)
    # The real crop through onnxruntime gives the same feature direction.
    ref = _ort(mfn_path).run(None, {"input": (obama * 2 - 1).transpose(2, 0, 1)[None]})[0][0]
    assert _cos(ref, f[0]) > 1 - 1e-5
    # Any input size is resized to 112: a 224² crop gives nearly the same feature.
    big = cv2.resize(obama, (224, 224), interpolation=cv2.INTER_LINEAR)
    assert float(mfn(big[None]).numpy()[0] @ f[0]) > 0.95


def test_mobilefacenet_gradient(mfn):
    rng = np.random.default_rng(2)
    images = tf.Variable(rng.uniform(0, 1, (1, 96, 96, 3)).astype(np.float32))
    target = tf.math.l2_normalize(tf.constant(rng.normal(size=(1, 128)), tf.float32), -1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(mfn(images) - target))
    grad = tape.gradient(loss, images).numpy()
    assert grad.shape == (1, 96, 96, 3)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-6
    # A small step against the gradient lowers the loss: the gradient is the real one.
    step = 1e-3 / np.abs(grad).max()
    lowered = tf.reduce_sum(tf.square(mfn(images - step * grad) - target))
    assert float(lowered) < float(loss)


def test_mobilefacenet_missing_file(tmp_path):
    from recon_tf.nets.mobilefacenet import MobileFaceNet

    with pytest.raises(AssetMissingError, match="nope.onnx"):
        MobileFaceNet(str(tmp_path / "nope.onnx"))


# ---------------------------------------------------------------- VGG-Face

TINY = {"filters": (4, 8, 8, 16, 16), "fc_units": 32}


def _random_vgg(include_top: bool, input_size: int, seed: int = 0) -> tf.keras.Model:
    model = vggface.build_vgg16(TINY["filters"], TINY["fc_units"], input_size, include_top)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = (w.numpy() for w in layer.weights)
            fan_in = np.prod(kernel.shape[:-1])
            layer.set_weights([rng.normal(size=kernel.shape) * np.sqrt(2.0 / fan_in),
                               rng.normal(size=bias.shape) * 0.1])
    return model


def _write_keras2_h5(model: tf.keras.Model, path: str, nested: bool,
                     weight_names: bool = True) -> str:
    """keras-vggface's layout: a group per layer, ``weight_names`` attrs, ``name/name/kernel:0``."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.1.5"
        f.attrs["backend"] = b"tensorflow"
        root = f.create_group("model_weights") if nested else f
        top = "fc7" in [layer.name for layer in model.layers]
        extra = ["fc6/relu", "fc7/relu", "fc8", "fc8/softmax"] if top else []
        root.attrs["layer_names"] = [layer.name.encode() for layer in model.layers[1:]] + [
            n.encode() for n in extra]
        for name in extra:  # Keras-2 activation layers: "fc6/relu" nests a group inside "fc6"
            root.require_group(name).attrs["weight_names"] = np.array([], dtype="S1")
        for layer in model.layers[1:]:
            group = root.require_group(layer.name)
            if not layer.weights:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            kernel, bias = (w.numpy() for w in layer.weights)
            if weight_names:
                group.attrs["weight_names"] = [f"{layer.name}/kernel:0".encode(),
                                               f"{layer.name}/bias:0".encode()]
            group.create_dataset(f"{layer.name}/bias:0", data=bias)
            group.create_dataset(f"{layer.name}/kernel:0", data=kernel)
        if top:  # the classifier, which features never use
            group = root["fc8"]
            group.attrs["weight_names"] = [b"fc8/kernel:0", b"fc8/bias:0"]
            group.create_dataset("fc8/kernel:0", data=np.ones((TINY["fc_units"], 7), np.float32))
            group.create_dataset("fc8/bias:0", data=np.zeros(7, np.float32))
    return path


def _expected_features(model: tf.keras.Model, images: np.ndarray) -> np.ndarray:
    bgr = images[..., ::-1] * 255.0 - np.array(vggface.MEAN_BGR, np.float32)
    f = model(bgr.astype(np.float32), training=False).numpy()
    return f / np.linalg.norm(f, axis=1, keepdims=True)


@pytest.mark.parametrize("nested,weight_names", [(False, True), (True, True), (False, False)])
def test_vggface_h5_round_trip(tmp_path, nested, weight_names):
    model = _random_vgg(True, 64)
    path = _write_keras2_h5(model, str(tmp_path / "rcmalli_vggface_tf_vgg16.h5"), nested,
                            weight_names)
    net = vggface.VGGFace(path)
    assert (net.name, net.input_size, net.feature_dim) == ("vggface", 64, 32)
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    f = net(images).numpy()
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(f, _expected_features(model, images), atol=1e-5)
    # Another set of weights gives other features: the comparison above can fail.
    other = _expected_features(_random_vgg(True, 64, seed=1), images)
    assert np.abs(other - f).max() > 1e-2
    images_var = tf.Variable(images[:1])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(images_var) * tf.constant(f[1:]))
    grad = tape.gradient(loss, images_var).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_vggface_notop_h5(tmp_path):
    model = _random_vgg(False, 224)
    path = _write_keras2_h5(model, str(tmp_path / "rcmalli_vggface_tf_notop_vgg16.h5"), False)
    net = vggface.VGGFace(path)
    assert (net.input_size, net.feature_dim) == (224, 16)
    images = np.random.default_rng(4).uniform(0, 1, (1, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(net(images).numpy(), _expected_features(model, images), atol=1e-5)


def test_vggface_rejects_other_h5(tmp_path):
    path = str(tmp_path / "other.h5")
    with h5py.File(path, "w") as f:
        f.create_group("dense_1").create_dataset("dense_1/kernel:0", data=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="conv1_1"):
        vggface.VGGFace(path)


def test_vggface_missing_file(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "_override", str(tmp_path))
    with pytest.raises(AssetMissingError, match="rcmalli_vggface_tf_vgg16.h5") as info:
        vggface.VGGFace()
    assert "keras-vggface" in str(info.value)
    with pytest.raises(AssetMissingError, match="mine.h5"):
        vggface.VGGFace(str(tmp_path / "mine.h5"))
