"""Preprocessing: robust decoding, alignment, skin mask, landmarks, and the tool end to end."""

import glob
import importlib.util
import io
import json
import os
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from recon_tf.assets import asset_path
from recon_tf.data import readers
from recon_tf.preprocess import align, image_io, landmarks, skin_mask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def template_3d(face_model):
    return face_model.mean_landmarks_3d()


@pytest.fixture(scope="module")
def preprocessor(template_3d):
    from recon_tf.preprocess import FacePreprocessor

    return FacePreprocessor(template_3d=template_3d)


@pytest.fixture(scope="module")
def tool():
    """tools/preprocess.py as a module (loaded once: it defines absl flags)."""
    name = "recon_tf_tool_preprocess"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(REPO, "tools", "preprocess.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def _face_photo(name: str = "obama.jpg") -> np.ndarray:
    return image_io.load_image(asset_path("images/faces/" + name)).pixels


# ---------------------------------------------------------------- image_io


def test_decode_grayscale_is_replicated():
    gray = np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (40, 1))
    out = image_io.decode_image(_png(gray))
    assert out.pixels.shape == (40, 64, 3) and out.pixels.dtype == np.uint8
    np.testing.assert_array_equal(out.pixels[..., 0], gray)
    np.testing.assert_array_equal(out.pixels[..., 2], gray)
    assert out.scale == 1.0 and out.original_size == (64, 40)


def test_decode_rgba_composites_over_white():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (10, 20, 30, 255)  # opaque (RGB order)
    rgba[:, 20:] = (10, 20, 30, 0)  # fully transparent
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    out = image_io.decode_image(buf.getvalue()).pixels
    np.testing.assert_array_equal(out[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(out[0, 39], (255, 255, 255))
    assert image_io.decode_image(buf.getvalue()).source_mode == "RGBA"


def test_decode_16bit_gray_and_colour():
    gray16 = np.zeros((40, 40), np.uint16)
    gray16[:, :20] = 65535
    gray16[:, 20:] = 32896  # 128 * 257
    out = image_io.decode_image(_png(gray16)).pixels
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(out[0, 39], (128, 128, 128))
    bgr16 = np.zeros((40, 40, 3), np.uint16)
    bgr16[..., 2] = 65535  # red in OpenCV's BGR order
    out = image_io.decode_image(_png(bgr16)).pixels
    np.testing.assert_array_equal(out[5, 5], (255, 0, 0))


def test_decode_palette_with_transparency():
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    image.info["transparency"] = 0
    buf = io.BytesIO()
    image.save(buf, "PNG", transparency=0)
    out = image_io.decode_image(buf.getvalue()).pixels
    np.testing.assert_array_equal(out[0, 0], (255, 255, 255))


def test_decode_exif_rotation_swaps_size():
    image = Image.fromarray(np.zeros((40, 80, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    out = image_io.decode_image(buf.getvalue())
    assert out.pixels.shape == (80, 40, 3) and out.original_size == (40, 80)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_decode_with_their_orientation(fmt, tmp_path, preprocessor):
    """HEIC (iPhones' default) and AVIF photos decode like JPEGs: EXIF orientation
    applied, pixels close to the source, the face found; cut short, they are corrupt;
    a folder lists them."""
    photo = _face_photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90° clockwise
    turned_back = np.ascontiguousarray(np.rot90(photo, 1))  # what the file stores
    buf = io.BytesIO()
    Image.fromarray(turned_back).save(buf, fmt, quality=90, exif=exif.tobytes())
    data = buf.getvalue()
    assert image_io._has_image_signature(data)
    out = image_io.decode_image(data)
    assert out.pixels.shape == photo.shape
    assert np.abs(out.pixels.astype(float) - photo).mean() < 6.0
    assert preprocessor.detector.detect(out.pixels)
    with pytest.raises(image_io.ImageDecodeError) as err:
        image_io.decode_image(data[:len(data) // 2])
    assert err.value.reason == "corrupt"
    name = "photo." + ("heic" if fmt == "HEIF" else "avif")
    (tmp_path / name).write_bytes(data)
    assert [os.path.basename(r.image_path) for r in readers.read_folder(str(tmp_path))] == [
        name]


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"hello, this is a text file, not a picture\n" * 20, "not_an_image"),
    (_png(np.zeros((20, 100, 3), np.uint8)), "too_small"),
])
def test_decode_errors(data, reason):
    with pytest.raises(image_io.ImageDecodeError) as err:
        image_io.decode_image(data)
    assert err.value.reason == reason


@pytest.mark.parametrize("fraction", [0.05, 0.6])
def test_decode_truncated_jpeg_is_corrupt(fraction):
    smooth = cv2.resize((np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8),
                        (400, 400))
    data = cv2.imencode(".jpg", smooth)[1].tobytes()
    with pytest.raises(image_io.ImageDecodeError) as err:  # not a half-grey picture
        image_io.decode_image(data[:int(len(data) * fraction)])
    assert err.value.reason == "corrupt"


def test_decode_huge_is_downscaled_and_too_many_pixels_is_skipped():
    wide = np.zeros((64, 9000, 3), np.uint8)
    wide[:, 4500:] = 200
    out = image_io.decode_image(_png(wide))
    assert out.pixels.shape[1] == image_io.DEFAULT_MAX_SIDE
    assert out.original_size == (9000, 64)
    assert out.scale == pytest.approx(8192 / 9000)
    with pytest.raises(image_io.ImageDecodeError) as err:
        image_io.decode_image(_png(wide), max_pixels=100_000)
    assert err.value.reason == "too_large"


def test_load_image_missing_file(tmp_path):
    with pytest.raises(image_io.ImageDecodeError) as err:
        image_io.load_image(str(tmp_path / "nope.jpg"))
    assert err.value.reason == "unreadable"


# ---------------------------------------------------------------- align


def test_estimate_transform_recovers_scale_translation_and_rotation():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 300, (5, 2))
    m = np.array([[0.5, 0.0, 12.0], [0.0, 0.5, -7.0]])
    np.testing.assert_allclose(align.estimate_transform(src, align.apply_transform(m, src)), m,
                               atol=1e-4)
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[2 * c, -2 * s, 5.0], [2 * s, 2 * c, 1.0]])
    dst = align.apply_transform(rot, src)
    np.testing.assert_allclose(align.estimate_transform(src, dst, rotate=True), rot, atol=1e-3)
    no_rot = align.estimate_transform(src, dst)
    assert no_rot[0, 1] == 0 and no_rot[1, 0] == 0 and no_rot[0, 0] == no_rot[1, 1]
    with pytest.raises(ValueError):
        align.estimate_transform(np.ones((5, 2)), dst)


def test_compose_and_invert():
    a = np.array([[2.0, 0.0, 3.0], [0.0, 2.0, 1.0]])
    b = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 4.0]])
    p = np.array([[3.0, 7.0], [-1.0, 2.0]])
    np.testing.assert_allclose(align.apply_transform(align.compose(a, b), p),
                               align.apply_transform(a, align.apply_transform(b, p)), atol=1e-5)
    np.testing.assert_allclose(align.apply_transform(align.invert(a), align.apply_transform(a, p)),
                               p, atol=1e-5)


def test_standard_points_follow_the_camera_convention(template_3d):
    pts = align.project_template(template_3d)
    assert pts.shape == (68, 2)
    assert pts[36, 0] < pts[45, 0]  # image-left eye corner is left
    assert pts[19, 1] < pts[30, 1] < pts[8, 1]  # brows above nose above chin (y down)
    std = align.standard_points(template_3d)
    np.testing.assert_allclose(std[2], pts[30] - 0.5)  # pixel centres at integers
    half = align.standard_points(template_3d, image_size=112)
    np.testing.assert_allclose(half + 0.5, (std + 0.5) / 2, atol=1e-3)


def test_standard_points_are_where_the_renderer_puts_the_mean_face(face_model):
    from recon_tf.camera import Camera
    from recon_tf.render.renderer import project_landmarks

    for kind in ("perspective", "orthographic"):
        rendered = project_landmarks(face_model, face_model.layout.zeros(1),
                                     Camera.deep3d(256, kind)).numpy()[0]
        template = align.project_template(face_model.mean_landmarks_3d(), 256, kind)
        np.testing.assert_allclose(template, rendered, atol=1e-3)
        np.testing.assert_allclose(
            align.standard_points(face_model.mean_landmarks_3d(), 256, kind),
            align.five_points(rendered - 0.5), atol=1e-3)
    with pytest.raises(ValueError, match="in front of the camera"):
        align.project_template(np.array([[0.0, 0.0, 10.0]]))
    from recon_tf.preprocess import FacePreprocessor

    with pytest.raises(ValueError, match="needs template_3d"):
        FacePreprocessor()  # the library has no default face model


def test_align_face_maps_five_points_and_records_transform(template_3d):
    image = _face_photo()
    std68 = align.project_template(template_3d) - 0.5
    # landmarks of a face twice the standard size, shifted: alignment must undo it
    lm = std68 * 2.0 + np.array([250.0, 300.0], np.float32)
    out = align.align_face(image, lm, 224, template_3d)
    assert out.image.shape == (224, 224, 3) and out.image.dtype == np.uint8
    np.testing.assert_allclose(out.landmarks, std68, atol=1e-3)
    np.testing.assert_allclose(out.transform, [[0.5, 0, -125], [0, 0.5, -150]], atol=1e-4)
    expected = cv2.warpAffine(cv2.GaussianBlur(image, (0, 0), 0.5), out.transform.astype(float),
                              (224, 224))
    assert np.abs(expected.astype(float) - out.image).mean() < 2.0
    assert out.valid.min() == 255


def test_valid_region_marks_padding():
    m = np.array([[1.0, 0.0, 100.0], [0.0, 1.0, 0.0]])  # source shifted right by 100 px
    valid = align.valid_region(m, (50, 50), (224, 224))
    assert valid[10, 120] == 255 and valid[10, 50] == 0 and valid[100, 120] == 0


def test_warp_affine_antialiases_strong_downscaling():
    checker = ((np.indices((800, 800)).sum(0) % 2) * 255).astype(np.uint8)
    m = np.array([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]])
    out = align.warp_affine(checker, m, (80, 80))
    assert abs(float(out[5:-5, 5:-5].mean()) - 127.5) < 3 and out[5:-5, 5:-5].std() < 3


# ---------------------------------------------------------------- skin mask


def _synthetic_face(template_3d):
    """A skin-coloured face on a blue background, dark hair at the top, red lips."""
    lm = align.project_template(template_3d)
    image = np.zeros((224, 224, 3), np.uint8)
    image[:] = (40, 60, 200)
    hull = cv2.convexHull(np.concatenate([lm[:17], lm[17:27] - [0, 60]]).astype(np.int32))
    cv2.fillConvexPoly(image, hull, (205, 150, 120))
    image[:40] = (25, 20, 15)  # hair
    cv2.fillPoly(image, [lm[48:60].astype(np.int32)], (170, 40, 50))
    rng = np.random.default_rng(0)
    noisy = image.astype(np.int16) + rng.integers(-4, 5, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), lm


def test_skin_mask_keeps_skin_and_drops_eyes_mouth_hair_background(template_3d):
    image, lm = _synthetic_face(template_3d)
    result = skin_mask.skin_mask(image, lm)
    mask = result.mask
    assert result.method == "colour" and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    cheek = np.round(0.5 * (lm[3] + lm[31])).astype(int)
    assert mask[cheek[1], cheek[0]] == 255
    for idx in (37, 44, 57):  # eyes, lower lip
        x, y = np.round(lm[idx]).astype(int)
        assert mask[y, x] == 0
    assert mask[:40].max() == 0  # hair band
    assert mask[5, 5] == 0 and mask[220, 5] == 0  # background
    geometric = skin_mask.geometric_mask(lm, (224, 224))
    assert (mask > 0).sum() < (geometric > 0).sum()


def test_background_is_what_is_clearly_not_the_face(template_3d):
    """The silhouette term's background: the blue outside the face, not the face, its
    lips or a skin-coloured neck; nothing on a grayscale photo or in padding."""
    image, lm = _synthetic_face(template_3d)
    chin = np.round(lm[8]).astype(int)
    image[chin[1] - 2:, chin[0] - 20:chin[0] + 20] = (205, 150, 120)  # a neck
    result = skin_mask.skin_mask(image, lm)
    bg = result.background > 0
    assert bg[5:, :5].all() and bg[120, 220]  # blue surroundings (hair excepted)
    face = skin_mask.face_region(lm, (224, 224)) > 0
    assert not (bg & face).any()
    for idx in (30, 48, 54, 57):  # nose tip, mouth corners, lower lip
        x, y = np.round(lm[idx]).astype(int)
        assert not bg[y - 3:y + 4, x - 3:x + 4].any()
    assert not bg[chin[1] + 12:, chin[0] - 12:chin[0] + 12].any()  # skin-coloured neck
    valid = np.full((224, 224), 255, np.uint8)
    valid[:, :20] = 0
    assert not (skin_mask.skin_mask(image, lm, valid).background[:, :20] > 0).any()
    gray = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert skin_mask.skin_mask(gray, lm).background.max() == 0
    island = image.copy()
    island[180:210, 10:40] = (205, 150, 120)  # skin-coloured, apart from the face
    assert (skin_mask.skin_mask(island, lm).background[185:205, 15:35] > 0).all()


def test_an_open_mouth_is_background_and_a_closed_one_is_not(template_3d):
    """The open mouth's inside (teeth) joins the silhouette term's background, so the fit
    keeps the lips off it; the lips themselves and a closed mouth stay out of it."""
    image, lm = _synthetic_face(template_3d)
    assert skin_mask.mouth_opening(lm, (224, 224)).max() == 0  # the mean face: closed
    opened = lm.copy()
    opened[[55, 56, 57, 58, 59, 65, 66, 67]] += [0.0, 12.0]  # lower lip down 12 px
    cv2.fillPoly(image, [opened[48:60].astype(np.int32)], (170, 40, 50))
    cv2.fillPoly(image, [opened[60:68].astype(np.int32)], (235, 235, 225))  # teeth
    inside = skin_mask.mouth_opening(opened, (224, 224)) > 0
    centre = np.round(0.5 * (opened[62] + opened[66])).astype(int)
    assert inside[centre[1] - 3:centre[1] + 4, centre[0] - 8:centre[0] + 9].all()
    for idx in (48, 54, 57, 51, 62, 66):  # corners, outer lips, the inner lips' edge
        x, y = np.round(opened[idx]).astype(int)
        assert not inside[y, x]
    bg = skin_mask.skin_mask(image, opened).background > 0
    assert (bg & inside).sum() == inside.sum()
    for idx in (51, 57):
        x, y = np.round(opened[idx]).astype(int)
        assert not bg[y - 1:y + 2, x - 1:x + 2].any()
    gray = skin_mask.skin_mask(np.repeat(image.mean(-1, keepdims=True), 3, -1).astype(np.uint8),
                               opened)  # no colour background, but the mouth's inside
    assert gray.method == "colour" and np.array_equal(gray.background > 0, inside)


def test_skin_mask_respects_valid_and_falls_back_on_grayscale(template_3d):
    image, lm = _synthetic_face(template_3d)
    valid = np.full((224, 224), 255, np.uint8)
    valid[:, 112:] = 0
    masked = skin_mask.skin_mask(image, lm, valid).mask
    assert masked[:, 112:].max() == 0 and masked[:, :112].max() == 255
    gray = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    result = skin_mask.skin_mask(gray, lm)
    assert (result.mask > 0).mean() > 0.1


def test_detail_regions_cover_features_inside_the_face_only(template_3d):
    image, lm = _synthetic_face(template_3d)
    details = skin_mask.detail_regions(lm, (224, 224))
    skin = skin_mask.skin_mask(image, lm).mask
    assert set(np.unique(details)) <= {0, 255}
    for idx in (37, 44, 19, 24, 57, 62):  # eyes, brows, lower lip, inner mouth
        x, y = np.round(lm[idx]).astype(int)
        assert details[y, x] == 255 and skin[y, x] == 0
    cheek = np.round(0.5 * (lm[3] + lm[31])).astype(int)
    assert details[cheek[1], cheek[0]] == 0  # the skin mask's part, not this one
    region = skin_mask.face_region(lm, (224, 224))
    assert not np.any(details & ~region)  # never outside the face polygon
    assert details[:40].max() == 0 and details[5, 5] == 0


# ---------------------------------------------------------------- landmarks


def test_read_pts_and_nme(tmp_path):
    path = tmp_path / "a.pts"
    pts = np.arange(136, dtype=np.float32).reshape(68, 2) + 1
    path.write_text("version: 1\nn_points: 68\n{\n"
                    + "\n".join(f"{x} {y}" for x, y in pts) + "\n}\n")
    np.testing.assert_allclose(readers.read_pts(str(path)), pts - 1)
    np.testing.assert_allclose(readers.read_pts(str(path), one_based=False), pts)
    truth = np.zeros((68, 2))
    truth[45] = (10, 0)
    assert landmarks.nme_outer_eyes(truth + [1.0, 0.0], truth) == pytest.approx(0.1)


def test_square_crop_box():
    left, top, side = landmarks.square_crop_box(np.array([10, 20, 40, 60]))
    assert side == 60 and left == pytest.approx(0.0) and top == pytest.approx(26.0)


def test_levelled_landmark_crop_frames_a_tilted_face_as_an_upright_one():
    """The second pass's crop of a face tilted by 40° holds the face exactly as the
    upright crop holds the untilted face: same crop coordinates, eyes level."""
    from recon_tf.preprocess.align import apply_transform

    truth = readers.read_pts(asset_path("images/faces_68pts/takeo.pts")).astype(np.float64)
    angle = landmarks.eye_roll(truth)
    c, s = np.cos(-angle), np.sin(-angle)
    upright = (truth - truth.mean(0)) @ np.array([[c, -s], [s, c]]).T + (200.0, 150.0)
    assert abs(landmarks.eye_roll(upright)) < 1e-9
    tilt = np.radians(40.0)
    c, s = np.cos(tilt), np.sin(tilt)
    tilted = (upright - (180.0, 170.0)) @ np.array([[c, -s], [s, c]]).T + (180.0, 170.0)
    assert landmarks.eye_roll(tilted) == pytest.approx(tilt)
    keypoints = np.stack([tilted[36:42].mean(0), tilted[42:48].mean(0)])
    assert landmarks.eye_roll(keypoints) == pytest.approx(tilt)
    reference = apply_transform(
        landmarks.levelled_crop(landmarks.landmark_crop_box(upright), 0.0), upright)
    framed = apply_transform(landmarks.levelled_landmark_crop(tilted), tilted)
    np.testing.assert_allclose(framed, reference, atol=1e-6)
    # Unturned, the same square holds the points elsewhere (the test could fail).
    assert np.abs(apply_transform(landmarks.levelled_crop(
        landmarks.landmark_crop_box(tilted), 0.0), tilted) - reference).max() > 5


def test_pfld_follows_a_tilted_head(preprocessor):
    """A photo turned by 45°: eye-levelled crops (default) give the turned photo's
    landmarks within 2.5 % of the eye distance of the upright photo's, turned."""
    image = image_io.load_image(asset_path("images/faces/obama.jpg")).pixels
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 45.0, 1.0)
    tilted = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
    face = preprocessor.detector.detect(image)[0]
    upright = preprocessor.landmarker(image, face.box, face.keypoints)
    expected = upright @ matrix[:, :2].T + matrix[:, 2]
    face = preprocessor.detector.detect(tilted)[0]
    assert abs(landmarks.eye_roll(face.keypoints) + np.radians(45)) < np.radians(10)
    eye = np.linalg.norm(upright[36] - upright[45])
    found = preprocessor.landmarker(tilted, face.box, face.keypoints)
    assert np.linalg.norm(found - expected, axis=1).mean() < 0.025 * eye
    unlevelled = landmarks.PFLDLandmarker(level=False)(tilted, face.box, face.keypoints)
    assert (np.linalg.norm(unlevelled - expected, axis=1).mean()
            > np.linalg.norm(found - expected, axis=1).mean())


def test_unavailable_landmarkers_raise_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown landmarker"):
        landmarks.make_landmarker("nope")
    monkeypatch.setattr(landmarks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(landmarks.LandmarkerUnavailableError, match="dlib-bin"):
        landmarks.make_landmarker("dlib")
    with pytest.raises(landmarks.LandmarkerUnavailableError, match="face-alignment"):
        landmarks.make_landmarker("fan")


def test_dlib_weights_found_without_importing_their_package(tmp_path, monkeypatch):
    """face-recognition-models' __init__ needs pkg_resources; its file is found by spec."""
    import types

    package = tmp_path / "face_recognition_models"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('pkg_resources')\n")
    spec = types.SimpleNamespace(submodule_search_locations=[str(package)])
    monkeypatch.delenv("RECON_TF_DLIB_PREDICTOR", raising=False)
    monkeypatch.setattr(landmarks.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(landmarks.LandmarkerUnavailableError, match="missing: .*shape_predictor"):
        landmarks.dlib_predictor_path()
    weights = package / "models" / landmarks.DLIB_PREDICTOR
    weights.write_bytes(b"dat")
    assert landmarks.dlib_predictor_path() == str(weights)
    other = tmp_path / "mine.dat"
    other.write_bytes(b"dat")
    monkeypatch.setenv("RECON_TF_DLIB_PREDICTOR", str(other))
    assert landmarks.dlib_predictor_path() == str(other)
    monkeypatch.delenv("RECON_TF_DLIB_PREDICTOR")
    monkeypatch.setattr(landmarks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(landmarks.LandmarkerUnavailableError, match="face-recognition-models"):
        landmarks.dlib_predictor_path()


def test_pfld_nme_on_annotated_photos(preprocessor):
    """PFLD on the 3 photos with ground truth, from the MTCNN box of the annotated face.

    MTCNN misses Einstein's face (it finds only the man behind him); there the
    box is the ground-truth landmarks' bounding box.
    """
    errors = {}
    for pts in sorted(glob.glob(asset_path("images/faces_68pts") + "/*.pts")):
        image_path = next(p for p in glob.glob(pts[:-4] + ".*") if not p.endswith(".pts"))
        image = image_io.load_image(image_path).pixels
        truth = readers.read_pts(pts)
        lo, hi = truth.min(0), truth.max(0)
        box = np.r_[lo, hi - lo]
        for face in preprocessor.detector.detect(image):
            x, y, w, h = face.box
            if x <= truth[30, 0] <= x + w and y <= truth[30, 1] <= y + h:
                box = face.box
        errors[os.path.basename(image_path)] = landmarks.nme_outer_eyes(
            preprocessor.landmarker(image, box), truth)
    assert len(errors) == 3
    assert all(e < 0.08 for e in errors.values()), errors


def test_pfld_second_pass_follows_the_face_not_the_box(preprocessor):
    """With the second pass, a detector box shifted by 15 % of its size moves the
    landmarks less than with one pass, and the two-pass landmarks stay on the face."""
    image = image_io.load_image(asset_path("images/faces/obama.jpg")).pixels
    box = preprocessor.detector.detect(image)[0].box
    one_pass = landmarks.PFLDLandmarker(refine_passes=0)
    two_pass = landmarks.PFLDLandmarker()
    shifts = {"one": [], "two": []}
    for dx, dy in ((0.15, 0.0), (0.0, 0.15), (-0.15, -0.15)):
        moved = box + np.array([dx * box[2], dy * box[3], 0.0, 0.0], np.float32)
        for name, marker in (("one", one_pass), ("two", two_pass)):
            delta = marker(image, moved) - marker(image, box)
            shifts[name].append(np.linalg.norm(delta, axis=1).mean())
    assert np.mean(shifts["two"]) < 0.8 * np.mean(shifts["one"]), shifts
    left, top, side = landmarks.landmark_crop_box(two_pass(image, box))
    x, y, w, h = box
    assert abs(left + side / 2 - (x + w / 2)) < 0.15 * w and 0.9 * w < side < 1.6 * w


# ---------------------------------------------------------------- end to end


def _make_inputs(folder):
    folder.mkdir()
    faces = asset_path("images/faces")
    for name in ("obama.jpg", "Bryan.png", "two_people.jpg", "dogs.jpg"):
        with open(os.path.join(faces, name), "rb") as src:
            (folder / name).write_bytes(src.read())
    face = _face_photo("obama2.jpg")
    gray16 = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    (folder / "gray16.png").write_bytes(_png(gray16))
    canvas = np.full((600, 8400, 3), 90, np.uint8)
    small = cv2.resize(face, (300, 300 * face.shape[0] // face.shape[1]))[:560]
    canvas[20:20 + small.shape[0], 4000:4300] = small
    (folder / "huge.jpg").write_bytes(cv2.imencode(".jpg", canvas[..., ::-1])[1].tobytes())
    jpeg = (folder / "obama.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 50])
    (folder / "notes.jpg").write_text("not an image at all\n" * 50)
    (folder / "tiny.png").write_bytes(_png(np.full((20, 24, 3), 128, np.uint8)))
    (folder / "readme.txt").write_text("hello")


EXPECTED = {
    "obama.jpg": ("kept", ""), "Bryan.png": ("kept", ""), "two_people.jpg": ("kept", ""),
    "gray16.png": ("kept", ""), "huge.jpg": ("kept", ""), "dogs.jpg": ("skipped", "no_face"),
    "truncated.jpg": ("skipped", "corrupt"), "notes.jpg": ("skipped", "not_an_image"),
    "tiny.png": ("skipped", "too_small"), "readme.txt": ("skipped", "not_an_image_extension"),
}


def test_preprocess_tool_end_to_end_and_resume(tmp_path, tool, preprocessor, face_model):
    import tensorflow as tf

    from recon_tf.camera import Camera
    from recon_tf.data.tfrecord import check_alignment, parse_example

    _make_inputs(tmp_path / "in")
    config = tool.Config(input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                         shard_size=4, num_workers=1)
    summary = tool.run_preprocessing(config, preprocessor)
    assert summary["inputs"] == 10 and summary["kept"] == 5 and summary["shards"] == 3
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    by_name = {os.path.basename(e["path"]): e for e in report["inputs"]}
    for name, (status, reason) in EXPECTED.items():
        assert (by_name[name]["status"], by_name[name].get("reason", "")) == (status, reason), name
    assert "kept the largest" in by_name["two_people.jpg"]["note"]
    assert by_name["huge.jpg"]["downscaled_by"] > 1.0
    # manifest and report name the face model and camera the crops were aligned to
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["face_model"] == {"name": "ict_facekit", "hash": face_model.geometry_hash}
    assert manifest["camera"]["kind"] == "perspective" and manifest["camera"]["focal"] == 1015.0
    assert report["face_model"] == manifest["face_model"]
    assert report["camera"] == manifest["camera"]
    check_alignment(manifest, face_model.name, face_model.geometry_hash, Camera.deep3d(224))
    with pytest.raises(ValueError, match="another face model or camera"):
        check_alignment(manifest, face_model.name, face_model.geometry_hash,
                        Camera.deep3d(224, "orthographic"))

    files = sorted(glob.glob(str(tmp_path / "out" / "shard-*-of-00003.tfrecord")))
    assert len(files) == 3 and not glob.glob(str(tmp_path / "out" / "*.tmp"))
    records = {}
    for serialized in tf.data.TFRecordDataset(files):
        ex = parse_example(serialized, image_size=224)
        records[os.path.basename(ex["source_path"].numpy().decode())] = ex
    assert sorted(records) == sorted(n for n, (s, _) in EXPECTED.items() if s == "kept")
    for ex in records.values():
        lm = ex["landmarks"].numpy()
        assert ex["image"].shape == (224, 224, 3) and ex["mask"].shape == (224, 224, 1)
        assert lm.min() > -5 and lm.max() < 229
        assert 0.1 < float(ex["mask"].numpy().mean()) < 0.7
    # the stored transform maps the original photo onto the crop (huge.jpg: 8400 px wide)
    ex = records["huge.jpg"]
    original = cv2.imread(str(tmp_path / "in" / "huge.jpg"))[..., ::-1]
    rewarped = align.warp_affine(original, ex["transform"].numpy(), (224, 224))
    assert np.abs(rewarped.astype(float) - ex["image"].numpy() * 255).mean() < 4.0

    # resume: nothing to do; then one lost shard is redone
    stamp = os.path.getmtime(files[0])
    assert tool.run_preprocessing(config, preprocessor)["processed_this_run"] == 0
    assert os.path.getmtime(files[0]) == stamp
    os.remove(str(tmp_path / "out" / "shard-00001-of-00003.json"))
    again = tool.run_preprocessing(config, preprocessor)
    assert again["processed_this_run"] == 4 and again["kept"] == 5
    assert os.path.getmtime(files[0]) == stamp
    with pytest.raises(ValueError, match="other settings"):
        tool.run_preprocessing(tool.Config(input=config.input, output=config.output,
                                           shard_size=5, num_workers=1), preprocessor)
    with pytest.raises(ValueError, match="another face model, camera"):
        tool.run_preprocessing(tool.Config(input=config.input, output=config.output,
                                           num_workers=1, camera="orthographic"), preprocessor)


@pytest.mark.slow
def test_preprocess_tool_worker_processes(tmp_path, tool):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("obama.jpg", "dogs.jpg", "Bryan.png"):
        with open(asset_path("images/faces/" + name), "rb") as src:
            (folder / name).write_bytes(src.read())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    summary = tool.run_preprocessing(tool.Config(
        input=str(folder), output=str(tmp_path / "out"), shard_size=2, num_workers=2))
    assert summary["kept"] == 2 and summary["skipped_by_reason"] == {"corrupt": 1, "no_face": 1}


def test_preprocess_tool_ls3d_layout_keeps_the_annotated_face(tmp_path, tool, preprocessor):
    """LS3D-W-style input: MTCNN misses Einstein (it finds the man behind him), so
    the annotation's box is used; the annotation is stored in crop pixels."""
    import tensorflow as tf

    from recon_tf.data.tfrecord import parse_example

    folder = tmp_path / "ls3d"
    folder.mkdir()
    for name in ("einstein.jpg", "einstein.pts", "takeo.ppm", "takeo.pts"):
        with open(asset_path("images/faces_68pts/" + name), "rb") as src:
            (folder / name).write_bytes(src.read())
    summary = tool.run_preprocessing(tool.Config(
        input=str(folder), output=str(tmp_path / "out"), dataset="ls3d", num_workers=1),
        preprocessor)
    assert summary["kept"] == 2
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    einstein = next(e for e in report["inputs"] if e["path"].endswith("einstein.jpg"))
    assert "annotation's bounding box" in einstein["note"]
    shard = str(tmp_path / "out" / "shard-00000-of-00001.tfrecord")
    for serialized in tf.data.TFRecordDataset(shard):
        ex = parse_example(serialized, 224, extra_names=["gt_landmarks"])
        nme = landmarks.nme_outer_eyes(ex["landmarks"].numpy(), ex["gt_landmarks"].numpy())
        assert nme < 0.08, (ex["source_path"].numpy(), nme)


@pytest.mark.slow
def test_every_shared_photo_goes_through_the_preprocessor(tmp_path, tool):
    """All photos in the assets' images/faces: every face photo kept, dogs.jpg no face."""
    folder = asset_path("images/faces")
    photos = sorted(f for f in os.listdir(folder)
                    if f.lower().endswith((".jpg", ".jpeg", ".png")))
    assert len(photos) >= 20
    summary = tool.run_preprocessing(tool.Config(input=folder, output=str(tmp_path / "out"),
                                                 shard_size=100, num_workers=1))
    with open(tmp_path / "out" / "report.json") as f:
        report = json.load(f)
    status = {os.path.basename(e["path"]): e for e in report["inputs"]}
    for name in photos:
        entry = status[name]
        if name == "dogs.jpg":
            assert entry["status"] == "skipped" and entry["reason"] == "no_face", entry
        else:
            assert entry["status"] == "kept", entry
    assert summary["kept"] == len(photos) - 1


def test_alignment_without_rotation_keeps_a_rolled_face_in_frame():
    """Scale + translation alignment is Deep3DFace's least squares up to a 45° roll;
    beyond, where least squares shrinks the face (cos θ) and turns negative past 90°,
    the similarity's scale × cos 45° stands in, so a face on its side still aligns."""
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, (5, 2))
    src -= src.mean(0)
    for degrees, expected in ((30, 2 * np.cos(np.radians(30))), (90, 2 * np.sqrt(0.5)),
                              (-120, 2 * np.sqrt(0.5))):
        t = np.radians(degrees)
        rot = 2 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        m = align.estimate_transform(src, src @ rot.T + [40.0, 60.0])
        np.testing.assert_allclose(m[:, :2], expected * np.eye(2), rtol=1e-6)
        np.testing.assert_allclose(m[:, 2], [40.0, 60.0], atol=1e-6)  # centroids meet


@pytest.mark.parametrize("colour", [(90, 140, 200), (235, 235, 235)])
def test_a_mask_over_the_lower_face_is_not_taken_for_skin(template_3d, colour):
    """A blue or white surgical mask over the nose, cheeks and mouth covers every part
    the skin colour was sampled from. The mask's colour must not become 'skin'; the
    forehead is sampled instead, and the mask comes back as an occluder, which callers
    keep out of the lip and eye regions they add without a colour test."""
    image, lm = _synthetic_face(template_3d)
    clean = skin_mask.skin_mask(image, lm)
    for idx in (19, 24, 37, 44, 51, 57, 30):  # brows, eyes, lips, nose: not occluders
        x, y = np.round(lm[idx]).astype(int)
        assert clean.occluded[y, x] == 0
    assert clean.occluded[20, 112] == 255  # the hair over the forehead is one
    masked = image.copy()
    hair = np.zeros(masked.shape[:2], bool)
    hair[15:40] = masked[15:40].max(axis=-1) < 60
    masked[hair] = (205, 150, 120)  # a higher hairline: a forehead to sample
    cv2.fillPoly(masked, [np.concatenate([lm[2:15], lm[[29]]]).astype(np.int32)], colour)
    result = skin_mask.skin_mask(masked, lm)
    assert result.method == "colour"
    cheek = np.round(0.5 * (lm[3] + lm[31])).astype(int)
    brow = np.round(lm[[19, 24]].mean(0)).astype(int)
    forehead = np.round(brow + 0.3 * (lm[[19, 24]].mean(0) - lm[8]) / 3).astype(int)
    assert result.mask[cheek[1], cheek[0]] == 0  # the mask is not skin
    assert result.mask[forehead[1], forehead[0]] == 255  # the forehead is
    for idx in (57, 62, 33):  # lower lip, inner mouth, under the nose
        x, y = np.round(lm[idx]).astype(int)
        assert result.occluded[y, x] == 255
    assert result.occluded[forehead[1], forehead[0]] == 0
    for idx in (37, 44):
        x, y = np.round(lm[idx]).astype(int)
        assert result.occluded[y, x] == 0


def test_sunglasses_are_occluders_and_one_shadowed_eye_is_not(template_3d):
    """Dark lenses over both eyes are occluders (found by brightness, so in grayscale
    photos too); one eye in a deep shadow is not."""
    image, lm = _synthetic_face(template_3d)
    d = np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))

    def with_lenses(eyes):
        out = image.copy()
        for eye in eyes:
            c = lm[eye].mean(0)
            cv2.ellipse(out, (int(c[0]), int(c[1])), (int(0.3 * d), int(0.2 * d)), 0, 0, 360,
                        (15, 15, 20), -1)
        return out

    both = with_lenses([slice(36, 42), slice(42, 48)])
    gray = np.repeat(cv2.cvtColor(both, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    for photo in (both, gray):
        occluded = skin_mask.skin_mask(photo, lm).occluded
        for idx in (37, 44, 39, 42):  # eyelids and inner corners, under the lenses
            x, y = np.round(lm[idx]).astype(int)
            assert occluded[y, x] == 255
        cheek = np.round(0.5 * (lm[3] + lm[31])).astype(int)
        assert occluded[cheek[1], cheek[0]] == 0
    one = skin_mask.skin_mask(with_lenses([slice(36, 42)]), lm).occluded
    for idx in (37, 44):
        x, y = np.round(lm[idx]).astype(int)
        assert one[y, x] == 0
