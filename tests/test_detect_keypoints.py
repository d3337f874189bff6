"""Face detection: MTCNN keypoints in the documented order, padding for tight crops,
and FaceMesh's second opinion on the faces MTCNN is unsure of."""

import dataclasses

import cv2
import numpy as np
import pytest

from recon_tf.assets import asset_path
from recon_tf.preprocess.detect import FaceDetector
from recon_tf.preprocess.image_io import load_image


def test_keypoints_are_xy_pairs_inside_the_box():
    try:
        image = load_image(asset_path("images/faces/obama.jpg")).pixels
    except FileNotFoundError as err:
        pytest.skip(str(err))
    face = FaceDetector().detect(image)[0]
    x, y, w, h = face.box
    kp = face.keypoints
    assert np.all((kp[:, 0] > x) & (kp[:, 0] < x + w) & (kp[:, 1] > y) & (kp[:, 1] < y + h))
    left_eye, right_eye, nose, mouth_left, mouth_right = kp
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_small_faces_of_a_big_photo_need_a_larger_search_side():
    """MTCNN searches a copy downscaled to ``detect_max_side``: 40-px faces of a 12 MP
    photo shrink below its smallest face at 1024 and are found at 2048, with boxes in
    the photo's own pixels (``tools/reconstruct.py --detect_max_side``)."""
    try:
        image = load_image(asset_path("images/faces/obama.jpg")).pixels
    except FileNotFoundError as err:
        pytest.skip(str(err))
    face = cv2.resize(image[60:480, 330:650], None, fx=40 / 334, fy=40 / 334,
                      interpolation=cv2.INTER_AREA)
    photo = np.full((3024, 4032, 3), 110, np.uint8)
    corners = [(400, 500), (400, 1800), (1600, 3100)]
    for y, x in corners:
        photo[y:y + face.shape[0], x:x + face.shape[1]] = face
    assert FaceDetector(detect_max_side=1024).detect(photo) == []
    found = FaceDetector(detect_max_side=2048).detect(photo)
    assert len(found) == len(corners)
    for y, x in corners:
        centre = np.array([x, y]) + 0.5 * np.array(face.shape[1::-1])
        box = min(found, key=lambda f: np.linalg.norm(f.box[:2] + 0.5 * f.box[2:] - centre))
        assert np.linalg.norm(box.box[:2] + 0.5 * box.box[2:] - centre) < 15
        assert 25 < box.box[3] < 70


def test_a_face_filling_the_frame_is_found_by_padding():
    """A tight crop inside the face box (MTCNN misses it as is) is found once padded,
    with its box in the crop's own pixels."""
    try:
        image = load_image(asset_path("images/faces/bald_guys.jpg")).pixels
    except FileNotFoundError as err:
        pytest.skip(str(err))
    detector = FaceDetector()
    x, y, w, h = detector.detect(image)[0].box.astype(int)
    crop = image[y + h // 10:y + h - h // 10, x + w // 10:x + w - w // 10].copy()
    assert FaceDetector(pad_fractions=()).detect(crop) == []
    faces = detector.detect(crop)
    assert len(faces) == 1
    bx, by, bw, bh = faces[0].box
    ch, cw = crop.shape[:2]
    assert 0 <= bx + bw / 2 <= cw and 0 <= by + bh / 2 <= ch  # centred on the crop
    assert 0.8 < bw / (0.8 * w) < 2.0  # the face's size, not the padded frame's
    kp = faces[0].keypoints
    assert np.all((kp > -0.1 * cw) & (kp < 1.1 * np.array([cw, ch])))
    # A fallback search: with a verifier, what the padded retry finds needs its word
    # (even at MTCNN's confidence ≥ 0.9), and its boxes come back at the canvas's scale.
    pad = int(round(0.25 * max(ch, cw)))
    assert FaceDetector(verifier=lambda img, box: 0.0)._detect_padded(crop, pad) == []
    kept = FaceDetector(verifier=lambda img, box: 0.75)._detect_padded(crop, pad)
    assert len(kept) == 1 and kept[0].verify_score == 0.75
    kx, ky, kw, kh = kept[0].box - [pad, pad, 0, 0]
    assert 0 <= kx + kw / 2 <= cw and 0 <= ky + kh / 2 <= ch and 0.8 < kw / (0.8 * w) < 2.0


def _einstein():
    from recon_tf.preprocess.landmarks import read_pts

    try:
        image = load_image(asset_path("images/faces_68pts/einstein.jpg")).pixels
        truth = read_pts(asset_path("images/faces_68pts/einstein.pts"))
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return image, truth


def _on_face(face, truth) -> bool:
    """The box's centre lies inside the annotated landmarks' bounding box."""
    cx, cy = face.box[:2] + face.box[2:] / 2
    (x0, y0), (x1, y1) = truth.min(axis=0), truth.max(axis=0)
    return bool(x0 < cx < x1 and y0 < cy < y1)


def test_verifier_recovers_a_face_mtcnn_drops():
    """MTCNN alone misses Einstein (its R-Net drops him); with every proposal sent on
    and a verifier, he is found, with the verifier's score recorded. A verifier that
    says no keeps MTCNN's own answer."""
    image, truth = _einstein()
    plain = FaceDetector().detect(image)
    assert plain and not any(_on_face(f, truth) for f in plain)
    assert all(f.verify_score is None for f in plain)
    asked = []

    def always_no(img, box):
        asked.append(box.copy())
        return 0.0

    refused = FaceDetector(verifier=always_no).detect(image)
    assert asked  # the unsure candidates went to the verifier
    assert [tuple(f.box) for f in refused] == [tuple(f.box) for f in plain]
    found = FaceDetector(verifier=lambda img, box: 0.9).detect(image)
    ein = [f for f in found if _on_face(f, truth)]
    assert len(ein) == 1 and ein[0].verify_score == pytest.approx(0.9)
    assert 0.6 <= ein[0].confidence < 0.9
    assert ein[0].to_json()["verify_score"] == pytest.approx(0.9)


def test_facemesh_face_score_tells_faces_from_look_alikes():
    """FaceMesh's face score: ≈ 1 on Einstein and the seated man, ≈ 0 on a patch of the
    painting that MTCNN's O-Net half-believes."""
    from recon_tf.nets.facemesh import FaceMesh

    image, truth = _einstein()
    try:
        mesh = FaceMesh()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    (x0, y0), (x1, y1) = truth.min(axis=0), truth.max(axis=0)
    einstein = np.array([x0, y0, x1 - x0, y1 - y0], np.float32)
    seated = np.array([134, 621, 40, 57], np.float32)
    painting = np.array([39, 129, 35, 40], np.float32)
    assert mesh.face_score(image, einstein) > 0.9
    assert mesh.face_score(image, seated) > 0.9
    assert mesh.face_score(image, painting) < 0.2
    detector = FaceDetector(verifier=mesh.face_score)
    found = detector.detect(image)
    assert sum(_on_face(f, truth) for f in found) == 1
    assert len(found) == 2  # Einstein and the seated man; no look-alike passes
    assert _on_face(found[0], truth)  # the largest: the main face of the main job


def test_mirror_pass_finds_a_face_only_the_mirror_image_shows():
    """Mirrored, einstein.jpg hides Einstein from MTCNN even with the verifier; the
    mirrored pass finds him, maps his box and keypoints back, and keeps him only on
    the verifier's word; faces both passes find are not doubled."""
    from recon_tf.nets.facemesh import FaceMesh

    image, truth = _einstein()
    flipped = np.ascontiguousarray(image[:, ::-1])
    w = image.shape[1]
    truth = np.stack([w - 1 - truth[:, 0], truth[:, 1]], 1)
    try:
        mesh = FaceMesh()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    with pytest.raises(ValueError, match="needs a verifier"):
        FaceDetector(mirror_pass=True)
    single = FaceDetector(verifier=mesh.face_score).detect(flipped)
    assert not any(_on_face(f, truth) for f in single)
    both = FaceDetector(verifier=mesh.face_score, mirror_pass=True).detect(flipped)
    ein = [f for f in both if _on_face(f, truth)]
    assert len(ein) == 1 and ein[0].mirrored and ein[0].verify_score > 0.9
    assert ein[0].to_json()["mirrored"] is True
    left_eye, right_eye, nose, mouth_left, mouth_right = ein[0].keypoints
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    x, y, bw, bh = ein[0].box
    assert np.all((ein[0].keypoints[:, 0] > x) & (ein[0].keypoints[:, 0] < x + bw))
    assert len(both) == len(single) + 1  # the faces both passes see are not doubled
    refused = FaceDetector(verifier=lambda img, box: 0.0, mirror_pass=True).detect(flipped)
    assert not any(f.mirrored for f in refused)


def test_rotated_search_finds_a_face_turned_on_its_side():
    """takeo.ppm turned by 90° is missed upright, padded and mirrored; the rotated
    search finds him standing upright in the turned-back image, maps his box and
    keypoints back onto the face (eyes in the subject's order), records the angle,
    and keeps him only on the verifier's word."""
    from recon_tf.data.photo_variants import photo_variant
    from recon_tf.nets.facemesh import FaceMesh
    from recon_tf.preprocess.landmarks import read_pts

    try:
        image = load_image(asset_path("images/faces_68pts/takeo.ppm")).pixels
        truth = read_pts(asset_path("images/faces_68pts/takeo.pts"))
        mesh = FaceMesh()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    turned, points = photo_variant("rot-90", image, truth)
    with pytest.raises(ValueError, match="need a verifier"):
        FaceDetector(rotations=(90.0,))
    upright = FaceDetector(verifier=mesh.face_score, mirror_pass=True).detect(turned)
    assert not any(_on_face(f, points) for f in upright)
    found = FaceDetector(verifier=mesh.face_score, mirror_pass=True,
                         rotations=(45.0, -45.0, 90.0, -90.0)).detect(turned)
    takeo = [f for f in found if _on_face(f, points)]
    assert len(takeo) == 1 and takeo[0].rotation == 90.0 and takeo[0].verify_score > 0.9
    assert takeo[0].to_json()["rotation"] == 90.0
    eye_distance = np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0))
    for keypoint, eye in zip(takeo[0].keypoints[:2], (points[36:42], points[42:48])):
        assert np.linalg.norm(keypoint - eye.mean(0)) < 0.25 * eye_distance
    refused = FaceDetector(verifier=lambda img, box: 0.0, mirror_pass=True,
                           rotations=(90.0, -90.0)).detect(turned)
    assert not any(_on_face(f, points) for f in refused)


def _annotated(stem: str, ext: str):
    from recon_tf.preprocess.landmarks import read_pts

    try:
        image = load_image(asset_path(f"images/faces_68pts/{stem}.{ext}")).pixels
        truth = read_pts(asset_path(f"images/faces_68pts/{stem}.pts"))
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return image, truth


def test_frame_check_finds_the_face_that_fills_a_tight_crop():
    """Cropped to its 68 points' bounding box, Einstein is missed by MTCNN even padded
    and mirrored; the frame check finds his whole face (eyes on the eyes), on the
    framer's word only."""
    from recon_tf.data.photo_variants import photo_variant
    from recon_tf.nets.facemesh import FaceMesh

    image, truth = _annotated("einstein", "jpg")
    try:
        mesh = FaceMesh()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    crop, points = photo_variant("tight", image, truth)
    h, w = crop.shape[:2]
    assert FaceDetector(verifier=mesh.face_score, mirror_pass=True).detect(crop) == []
    found = FaceDetector(verifier=mesh.face_score, mirror_pass=True,
                         framer=mesh.detect).detect(crop)
    assert len(found) == 1 and found[0].framed and found[0].confidence == 0.0
    face = found[0]
    assert _on_face(face, points) and face.area > 0.25 * w * h
    assert face.to_json()["framed"] is True and face.verify_score >= 0.9
    eye_distance = np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0))
    for keypoint, eye in zip(face.keypoints[:2], (points[36:42], points[42:48])):
        assert np.linalg.norm(keypoint - eye.mean(0)) < 0.35 * eye_distance
    refused = FaceDetector(verifier=mesh.face_score, mirror_pass=True,
                           framer=lambda img, box: (np.zeros((468, 3)), 0.0))
    assert refused.detect(crop) == []


def test_a_part_of_a_face_is_not_a_face():
    """Cropped tightly, breakingbad's face comes with a small box on one eye behind the
    glasses that MTCNN calls a face. Cropped one way MTCNN finds the face and the eye:
    the eye is dropped. Cropped another it finds the eye alone: the frame check finds
    the face, and the eye is dropped again."""
    from recon_tf.nets.facemesh import FaceMesh

    image, truth = _annotated("breakingbad", "jpg")
    try:
        mesh = FaceMesh()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    (x0, y0), (x1, y1) = truth.min(0), truth.max(0)
    fw, fh = x1 - x0, y1 - y0
    crops = {"face and eye": (int(x0 + 0.05 * fw), int(y0 + 0.1 * fh), int(x1 - 0.05 * fw),
                              int(y1)),
             "eye alone": (int(x0), int(y0 + 0.1 * fh), int(x1), int(y1 - 0.05 * fh))}
    plain = FaceDetector(verifier=mesh.face_score, mirror_pass=True)
    framed = FaceDetector(verifier=mesh.face_score, mirror_pass=True, framer=mesh.detect)
    for name, (left, top, right, bottom) in crops.items():
        crop = np.ascontiguousarray(image[top:bottom, left:right])
        points = truth - [left, top]
        h, w = crop.shape[:2]
        raw = plain._detect_both(crop)  # MTCNN's own answer, before the nesting rule
        assert any(f.area < 0.1 * w * h for f in raw), name
        assert any(f.area > 0.25 * w * h for f in raw) == (name == "face and eye"), name
        for detector in (plain, framed) if name == "face and eye" else (framed,):
            faces = detector.detect(crop)
            assert len(faces) == 1, (name, faces)
            assert _on_face(faces[0], points) and faces[0].area > 0.25 * w * h, name
        assert faces[0].framed == (name == "eye alone")


def test_frame_check_leaves_a_portrait_alone():
    """takeo.ppm is a portrait FaceMesh calls a face when run on the whole frame; MTCNN
    already found that face, so the frame check adds nothing."""
    from recon_tf.nets.facemesh import FaceMesh

    image, truth = _annotated("takeo", "ppm")
    try:
        mesh = FaceMesh()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    h, w = image.shape[:2]
    assert mesh.detect(image, np.array([0, 0, w, h], np.float32))[1] > 0.9
    plain = FaceDetector(verifier=mesh.face_score).detect(image)
    framed = FaceDetector(verifier=mesh.face_score, framer=mesh.detect).detect(image)
    assert len(plain) == len(framed) == 1 and not framed[0].framed
    np.testing.assert_allclose(framed[0].box, plain[0].box)


def test_frame_check_adds_no_ghost_beside_a_found_face():
    """Paul.jpeg cut at the eyes: MTCNN finds the face, and FaceMesh on the whole frame
    calls the frame a face (≥ 0.99) but puts it half a face too low (IoU 0.30 with
    MTCNN's box). That mesh is not a second face: the frame check measures the overlap
    on the smaller box."""
    from recon_tf.nets.facemesh import FaceMesh

    try:
        image = load_image(asset_path("images/faces/Paul.jpeg")).pixels
        mesh = FaceMesh()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    x, y, w, h = FaceDetector().detect(image)[0].box
    crop = image[int(y + 0.3 * h):]
    plain = FaceDetector(verifier=mesh.face_score, mirror_pass=True).detect(crop)
    assert len(plain) == 1
    ch, cw = crop.shape[:2]
    points, score = mesh.detect(crop, np.array([0, 0, cw, ch], np.float32))
    assert score >= 0.9  # the framer does see a face in the frame
    found = FaceDetector(verifier=mesh.face_score, mirror_pass=True,
                         framer=mesh.detect).detect(crop)
    assert len(found) == 1 and not found[0].framed
    np.testing.assert_allclose(found[0].box, plain[0].box)


def test_landmarks_and_facemesh_check_each_other(face_model):
    """A box from Einstein's nose bridge to below his chin, with 'eyes' on his nostrils
    (what MTCNN gave a synthetic face whose eye sockets were dark), fools whichever
    model reads it. When PFLD read it and FaceMesh had the face, PFLD is re-run on
    FaceMesh's framing and lands on the face; when FaceMesh read it and PFLD had the
    face, FaceMesh is re-run on PFLD's framing and PFLD's points stay."""
    from recon_tf.photo_faces import MESH_DISAGREEMENT, FacePreparer
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.preprocess.align import five_points
    from recon_tf.preprocess.detect import keypoint_disagreement, mesh_face
    from recon_tf.preprocess.landmarks import eye_roll

    image, truth = _annotated("einstein", "jpg")
    try:
        from recon_tf.nets.facemesh import FaceMesh

        mesh = FaceMesh()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    pre = FacePreprocessor(template_3d=face_model.mean_landmarks_3d())
    check = FacePreparer(pre, mesh).check_with_mesh
    lo, hi = truth.min(0), truth.max(0)
    good, good_keys = np.r_[lo, hi - lo].astype(np.float32), five_points(truth)
    width = 0.8 * (truth[12, 0] - truth[4, 0])
    top, bottom = truth[30, 1], truth[8, 1] + 0.1 * (truth[8, 1] - truth[30, 1])
    bad = np.array([(truth[4, 0] + truth[12, 0] - width) / 2, top, width, bottom - top],
                   np.float32)
    bad_keys = np.stack([truth[31], truth[35], truth[51], truth[7], truth[9]]).astype(np.float32)
    eyes = np.linalg.norm(truth[36] - truth[45])

    def nme(points):
        return np.linalg.norm(points - truth, axis=1).mean() / eyes

    right, wrong = pre.landmarker(image, good, good_keys), pre.landmarker(image, bad, bad_keys)
    mesh_right, score_right = mesh.detect(image, good, angle=eye_roll(good_keys))
    mesh_wrong, score_wrong = mesh.detect(image, bad, angle=eye_roll(bad_keys))
    assert nme(right) < 0.08 and nme(wrong) > 0.3  # the box fools PFLD

    info = {}
    points, dense = check(image, wrong, mesh_right, score_right, info)
    assert info["mesh_disagreement"][1] == "landmarks re-framed"
    assert nme(points) < 0.08 and dense is mesh_right

    info = {}
    points, dense = check(image, right, mesh_wrong, score_wrong, info)
    assert info["mesh_disagreement"][0] > MESH_DISAGREEMENT  # the box fools FaceMesh
    assert info["mesh_disagreement"][1] == "facemesh re-framed"
    np.testing.assert_array_equal(points, right)
    assert keypoint_disagreement(mesh_face(dense, 1.0).keypoints, good_keys) < 0.15

    info = {}
    points, dense = check(image, right, mesh_right, score_right, info)
    assert not info and dense is mesh_right  # they agree: nothing is re-run


def test_a_failing_check_does_not_cost_the_face(face_model, monkeypatch):
    """If the PFLD–FaceMesh check itself fails, the face is still prepared, with PFLD's
    points and FaceMesh's mesh as read, and the failure is recorded."""
    from recon_tf.photo_faces import FacePreparer
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.preprocess.image_io import load_image as decode

    try:
        from recon_tf.nets.facemesh import FaceMesh

        mesh = FaceMesh()
        path = asset_path("images/faces_68pts/takeo.ppm")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    pre = FacePreprocessor(template_3d=face_model.mean_landmarks_3d())
    decoded = decode(path)
    face = pre.detector.detect(decoded.pixels)[0]
    preparer = FacePreparer(pre, mesh)

    def broken(*args, **kwargs):
        raise RuntimeError("planted")

    monkeypatch.setattr(preparer, "check_with_mesh", broken)
    item = preparer.prepare_face(path, (decoded, [face]), face, {})
    assert item.dense is not None and item.landmarks.shape == (68, 2)
    assert item.info["mesh_disagreement"] == ["check failed: planted"]


def _facemesh_or_skip():
    """FaceMesh from the assets; the test is skipped when they lack it."""
    try:
        from recon_tf.nets.facemesh import FaceMesh

        return FaceMesh()
    except FileNotFoundError as err:
        pytest.skip(str(err))


def test_a_face_accepted_upside_down_is_read_turned(face_model, tmp_path):
    """MTCNN accepts takeo turned by 180° as an upright face (keypoints placed as if
    upright), so the eye-levelled crops show PFLD the face upside down. FaceMesh scores
    that reading low; the face is read again with its keypoints turned by 180°, and
    the landmarks land on the face. An upright face is not re-read."""
    from recon_tf.data.photo_variants import photo_variant
    from recon_tf.photo_faces import UPSIDE_DOWN_SCORE, FacePreparer
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.preprocess.align import apply_transform, invert
    from recon_tf.preprocess.image_io import load_image as decode
    from recon_tf.preprocess.landmarks import nme_outer_eyes

    image, truth = _annotated("takeo", "ppm")
    mesh = _facemesh_or_skip()
    pre = FacePreprocessor(template_3d=face_model.mean_landmarks_3d(),
                           face_verifier=mesh.face_score, mirror_pass=True)
    preparer = FacePreparer(pre, mesh)
    results = {}
    for variant in ("orig", "rot180"):
        pixels, points = photo_variant(variant, image, truth)
        path = str(tmp_path / f"{variant}.png")
        cv2.imwrite(path, np.ascontiguousarray(pixels[..., ::-1]))
        decoded = decode(path)
        faces = pre.detector.detect(decoded.pixels)
        assert len(faces) == 1 and faces[0].rotation == 0  # MTCNN takes it as upright
        as_found = pre.landmarker(decoded.pixels, faces[0].box, faces[0].keypoints)
        item = preparer.prepare_face(path, (decoded, faces), faces[0], {})
        read = apply_transform(invert(item.crop_transform), item.landmarks)
        results[variant] = (nme_outer_eyes(as_found, points), nme_outer_eyes(read, points),
                            item.info)
    upright, turned = results["orig"], results["rot180"]
    assert "turned" not in upright[2] and upright[1] < 0.05
    assert turned[2]["facemesh_score"] < UPSIDE_DOWN_SCORE and turned[0] > 0.5
    assert turned[2]["turned"][0] == 180 and turned[1] < 0.05
    assert item.dense is not None


def test_a_masked_face_keeps_the_mask_out_of_every_fitted_region(face_model, tmp_path):
    """Obama with a blue surgical mask drawn over his nose, cheeks and mouth: the face is
    found, and neither the coarse fit's mask (skin + brows + lips) nor the fine stage's
    (+ eyes and mouth surroundings) covers the mask, while both keep the forehead."""
    from recon_tf.data.photo_variants import MASK_COLOUR, photo_variant
    from recon_tf.photo_faces import FacePreparer
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.preprocess.align import apply_transform, invert
    from recon_tf.preprocess.image_io import load_image as decode

    mesh = _facemesh_or_skip()
    try:
        path = asset_path("images/faces/obama.jpg")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    pre = FacePreprocessor(template_3d=face_model.mean_landmarks_3d(),
                           face_verifier=mesh.face_score, mirror_pass=True)
    preparer = FacePreparer(pre, mesh)
    plain = decode(path)
    face = pre.detector.detect(plain.pixels)[0]
    item = preparer.prepare_face(path, (plain, [face]), face, {})
    points = apply_transform(invert(item.crop_transform), item.landmarks)
    masked, _ = photo_variant("mask", plain.pixels, points)
    masked_path = str(tmp_path / "masked.png")
    cv2.imwrite(masked_path, np.ascontiguousarray(masked[..., ::-1]))
    decoded = decode(masked_path)
    faces = pre.detector.detect(decoded.pixels)
    assert faces, "the masked face is found"
    item = preparer.prepare_face(masked_path, (decoded, faces), faces[0], {})
    assert item.info["occluded_fraction"] > 0.05
    blue = np.all(np.abs(item.crop.astype(int) - MASK_COLOUR) < 12, axis=-1)
    assert blue.sum() > 2000
    for region in (item.skin_mask, item.fine_mask):
        assert (region[blue] > 0).mean() < 0.02
    lm = item.landmarks
    brows = lm[17:27].mean(0)
    forehead = np.round(brows + 0.3 * (brows - lm[8]) / 3).astype(int)
    assert item.skin_mask[forehead[1], forehead[0]] > 0


def test_an_upside_down_photo_is_searched_turned_though_a_patch_was_found(face_model,
                                                                         tmp_path):
    """breakingbad.jpg turned by 180°: MTCNN takes a patch of it for an upright face, so
    its rotated search (only when nothing is found) never starts. FaceMesh finds that
    patch no face, upright or turned, so the rotated search runs anyway: Walter White is
    found at 180° and his landmarks land on him; the patch is dropped."""
    from recon_tf.data.photo_variants import photo_variant
    from recon_tf.photo_faces import FacePreparer
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.preprocess.align import apply_transform, invert
    from recon_tf.preprocess.landmarks import nme_outer_eyes

    image, truth = _annotated("breakingbad", "jpg")
    mesh = _facemesh_or_skip()
    pre = FacePreprocessor(template_3d=face_model.mean_landmarks_3d(),
                           face_verifier=mesh.face_score, mirror_pass=True,
                           rotations=(45.0, -45.0, 90.0, -90.0, 180.0), face_framer=mesh.detect)
    pixels, points = photo_variant("rot180", image, truth)
    path = str(tmp_path / "upside_down.png")
    cv2.imwrite(path, np.ascontiguousarray(pixels[..., ::-1]))
    upright = pre.detector.detect(pixels)
    assert upright and all(f.rotation == 0 for f in upright)  # the patch
    preparer = FacePreparer(pre, mesh)
    faces = preparer.prepare_all(path)
    assert all(f.info.get("rotation") == 180.0 for f in faces)
    errors = [nme_outer_eyes(apply_transform(f.to_original, apply_transform(
        invert(f.crop_transform), f.landmarks)), points) for f in faces]
    assert min(errors) < 0.08


def test_a_given_face_box_picks_its_face_or_stands_in_for_a_missed_one(face_model, monkeypatch):
    """A data set's own face box (NoW's detected_face): the detection on it is kept even
    when it is not the largest; when the detector finds nothing, the box stands in,
    framed by FaceMesh (or, without FaceMesh, as given), and the landmarks land on the
    same face; without a box such a photo has no face."""
    from recon_tf.photo_faces import FacePreparer
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.preprocess.align import apply_transform, invert
    from recon_tf.preprocess.landmarks import nme_outer_eyes

    def photo_points(face):
        return apply_transform(face.to_original, apply_transform(invert(face.crop_transform),
                                                                  face.landmarks))

    def inside(points, box):
        x, y, w, h = box
        return np.all((points >= [x, y]) & (points <= [x + w, y + h]), axis=1).mean()

    mesh = _facemesh_or_skip()
    path = asset_path("images/faces/two_people.jpg")
    pre = FacePreprocessor(template_3d=face_model.mean_landmarks_3d())
    preparer = FacePreparer(pre, mesh)
    faces = preparer.decode_detect(path)[1]
    assert len(faces) == 2
    small = min(faces, key=lambda f: f.area)
    x, y, w, h = small.box
    given = np.array([x - 0.1 * w, y - 0.15 * h, 1.2 * w, 1.25 * h])  # framed otherwise
    chosen = preparer.prepare(path, box=given)
    assert chosen.info["note"] == "kept the detected face on the given box"
    assert chosen.info["box"] == small.to_json()["box"]  # not the largest face
    assert inside(photo_points(chosen), given) > 0.9

    monkeypatch.setattr(pre.detector, "detect", lambda pixels: [])
    assert preparer.prepare(path).reason == "no_face"
    framed = preparer.prepare(path, box=given)
    assert framed.info["note"] == "no detection on the given box; FaceMesh framed it"
    assert nme_outer_eyes(photo_points(framed), photo_points(chosen)) < 0.08
    plain = FacePreparer(pre, None).prepare(path, box=given)
    assert plain.info["note"] == "no detection on the given box; used the box"
    assert inside(photo_points(plain), given) > 0.9
    for bad in ([10.0, 10.0, 0.0, 50.0], [np.nan, 0.0, 9.0, 9.0], [1.0, 2.0, 3.0]):
        assert preparer.prepare(path, box=np.array(bad)).reason == "bad_box"


def test_a_second_face_facemesh_finds_no_face_is_dropped(face_model, tmp_path):
    """scikit-image's astronaut: MTCNN accepts a fold of the suit's collar (O-Net ≈ 0.94)
    beside Eileen Collins' face; FaceMesh scores the fold ≈ 0, so only the face is
    prepared, and the fold is reported as not_a_face. The rule never drops the largest
    face, nor a face without a FaceMesh score."""
    skimage_data = pytest.importorskip("skimage.data")
    from recon_tf.photo_faces import FALSE_FACE_SCORE, FacePreparer, false_face
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.preprocess.detect import FaceBox

    mesh = _facemesh_or_skip()
    path = str(tmp_path / "astronaut.png")
    cv2.imwrite(path, np.ascontiguousarray(skimage_data.astronaut()[..., ::-1]))
    pre = FacePreprocessor(template_3d=face_model.mean_landmarks_3d(),
                           face_verifier=mesh.face_score, mirror_pass=True)
    preparer = FacePreparer(pre, mesh)
    _, found = preparer.decode_detect(path)
    assert len(found) == 2  # the face and the fold
    items = preparer.prepare_all(path)
    assert len(items) == 1 and items[0].info["facemesh_score"] > 0.9
    (failed,) = items[0].info["failed_faces"]
    assert failed["face_index"] == 1 and failed["reason"] == "not_a_face"
    box = FaceBox(np.array([0, 0, 40, 40], np.float32), 0.95, np.zeros((5, 2), np.float32))
    low = {"facemesh_score": FALSE_FACE_SCORE / 2}
    assert false_face(box, low)
    assert not false_face(box, {})  # no FaceMesh: no second opinion, nothing dropped
    assert not false_face(box, {**low, "turned": [180, 0.95]})
    assert not false_face(dataclasses.replace(box, confidence=0.99), low)
    assert not false_face(dataclasses.replace(box, verify_score=0.9), low)
