"""Identity consistency on real photos: are one person's reconstructions alike?

    python experiments/identity_consistency.py                   # the shared photos
    python experiments/identity_consistency.py --reconstructions=<tools/reconstruct.py
        output> --identities=<file>                               # your own photos

Real photos have no true shape here (no scans), but photos of the same person do
share one. Each listed face's neutral shape (its ``coeffs.npz`` identity, zero
expression: what ``mesh_neutral.obj`` holds and NoW scores) is compared with every
other's, after rigid alignment, over the face model's front face
(:func:`recon_tf.metrics.identity_consistency`). A fit that recovers identity puts
one person's shapes closer together than different people's: the table gives both
mean distances (mm), their ratio and the AUC (the share of (same pair, different
pair) combinations whose different pair is the farther; 0.5 is chance). The mean
face for every photo would be perfectly consistent and score chance.

``--identities``: a text file, one face per line, ``<face folder> <identity>``; the
face folder is relative to the reconstructions (``obama`` for ``obama.jpg``'s largest
face, ``two_people/faces/1`` for another face). Faces not listed are left out. Two
copies of one photograph (a crop, another resolution) must not be listed as two
photos of a person: they measure the fit's stability, not its identity.

Without ``--reconstructions`` the main job (``tools/reconstruct.py``, coarse only,
plus ``--reconstruct_args``) first reconstructs the default photos of the shared
assets into ``<output>/reconstructions`` (resumable; ~2 min on 2 cores): Obama in
three photographs, Paul in two, and five other people, each once
(:data:`DEFAULT_IDENTITIES`; ``biden.jpg`` and ``two_people.jpg``'s Biden are one
photograph, so only ``biden`` is listed). That is 4 same-person pairs: a small
sample, read it as such.

Writes ``<output>/identity_consistency.md`` (the table and every same pair) and
``identity_consistency.csv`` (every pair), and prints the Markdown.
"""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys

import numpy as np
from absl import app, flags

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

FLAGS = flags.FLAGS
flags.DEFINE_string("reconstructions", None, "A tools/reconstruct.py output folder (default: "
                    "reconstruct the default shared photos into <output>/reconstructions).")
flags.DEFINE_string("identities", None, "Text file of '<face folder> <identity>' lines "
                    "(default: DEFAULT_IDENTITIES, for the shared photos).")
flags.DEFINE_string("reconstruct_args", "", "Extra tools/reconstruct.py flags for the default "
                    "photos, e.g. '--alpha_weight=3e-4'.")
flags.DEFINE_string("output", "outputs/identity_consistency", "Output directory.")
flags.DEFINE_string("face_model", None, "recon_tf face-model .npz (default: ICT-FaceKit); "
                    "must be the one the reconstructions were fitted with.")
flags.DEFINE_string("assets_dir", None, "Assets root (default: $RECON_TF_ASSETS or "
                    "../shared/assets).")

# (face folder, identity, photo under images/faces of the shared assets)
DEFAULT_IDENTITIES = (
    ("obama", "obama", "obama.jpg"), ("obama2", "obama", "obama2.jpg"),
    ("two_people/faces/1", "obama", "two_people.jpg"),
    ("Paul", "paul", "Paul.jpeg"), ("Paul2", "paul", "Paul2.jpeg"),
    ("biden", "biden", "biden.jpg"), ("Chris", "chris", "Chris.jpeg"),
    ("Bryan", "bryan", "Bryan.png"), ("Luciano", "luciano", "Luciano.png"),
    ("Tom_Cruise_avp_2014_4", "tom_cruise", "Tom_Cruise_avp_2014_4.jpg"),
)


def read_identities(path: str | None) -> list[tuple[str, str]]:
    """(face folder, identity) pairs from ``path`` (blank lines and ``#`` comments
    skipped), or :data:`DEFAULT_IDENTITIES` when ``path`` is None."""
    if path is None:
        return [(face, who) for face, who, _ in DEFAULT_IDENTITIES]
    pairs = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise app.UsageError(f"{path}:{number}: expected '<face folder> <identity>', "
                                     f"got {line!r}")
            pairs.append((parts[0], parts[1]))
    return pairs


def reconstruct_defaults(out_dir: str) -> str:
    """Run the main job (coarse only) on the default photos; returns its output folder."""
    from recon_tf import assets

    photos = sorted({photo for _, _, photo in DEFAULT_IDENTITIES})
    listing = os.path.join(out_dir, "photos.txt")
    os.makedirs(out_dir, exist_ok=True)
    with open(listing, "w") as f:
        f.writelines(assets.asset_path(f"images/faces/{p}") + "\n" for p in photos)
    recon = os.path.join(out_dir, "reconstructions")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "reconstruct.py"), f"--input={listing}",
           f"--output={recon}", "--fine=false", "--previews=false",
           *([f"--assets_dir={FLAGS.assets_dir}"] if FLAGS.assets_dir else []),
           *([f"--face_model={FLAGS.face_model}"] if FLAGS.face_model else []),
           *shlex.split(FLAGS.reconstruct_args)]
    subprocess.run(cmd, check=True)
    return recon


def neutral_shapes(root: str, faces: list[str], face_model) -> np.ndarray:
    """float [F, N, 3] neutral shapes (model units) of the listed face folders."""
    import tensorflow as tf

    shapes = []
    zero_exp = tf.zeros([1, face_model.layout.exp_dim])
    for face in faces:
        path = os.path.join(root, face, "coeffs.npz")
        if not os.path.exists(path):
            raise app.UsageError(f"{path} is missing: no reconstructed face '{face}' under "
                                 f"{root} (see its summary.json)")
        with np.load(path) as d:
            if str(d["face_model"]) != face_model.name:
                raise app.UsageError(f"{path} was fitted with face model '{d['face_model']}',"
                                     f" not '{face_model.name}': pass --face_model")
            identity = tf.constant(np.asarray(d["identity"], np.float32)[None])
        shapes.append(face_model.shape(identity, zero_exp)[0].numpy())
    return np.stack(shapes)


def pair_rows(distances: np.ndarray, pairs: list[tuple[str, str]]) -> list[dict]:
    """Every pair of faces with its distance (mm, from the [F, F] ``distances``) and
    whether it is one person."""
    return [{"face_a": pairs[i][0], "face_b": pairs[j][0],
             "same_person": int(pairs[i][1] == pairs[j][1]),
             "distance_mm": round(float(distances[i, j]), 3)}
            for i in range(len(pairs)) for j in range(i + 1, len(pairs))]


def main(argv: list[str]) -> None:
    del argv
    from bfm import load_default_face_model
    from recon_tf import assets
    from recon_tf.face_model import load_face_model
    from recon_tf.metrics import (
        identity_consistency_of_distances,
        pairwise_vertex_distances_mm,
        rigid_vertex_error_mm,
    )

    if FLAGS.assets_dir:
        assets.set_assets_dir(FLAGS.assets_dir)
    face_model = (load_face_model(FLAGS.face_model) if FLAGS.face_model
                  else load_default_face_model())
    pairs = read_identities(FLAGS.identities)
    root = FLAGS.reconstructions or reconstruct_defaults(FLAGS.output)
    shapes = neutral_shapes(root, [face for face, _ in pairs], face_model)
    mask = face_model.front_mask.numpy() > 0.5
    distances = pairwise_vertex_distances_mm(shapes, mask)
    try:
        scores = identity_consistency_of_distances(distances, [who for _, who in pairs])
    except ValueError as err:
        raise app.UsageError(f"{FLAGS.identities or 'DEFAULT_IDENTITIES'}: {err}") from err
    mean = face_model.shape(np.zeros([1, face_model.layout.id_dim], np.float32),
                            np.zeros([1, face_model.layout.exp_dim], np.float32))
    to_mean = np.mean([rigid_vertex_error_mm(s, mean[0].numpy(), mask) for s in shapes])
    rows = pair_rows(distances, pairs)
    os.makedirs(FLAGS.output, exist_ok=True)
    with open(os.path.join(FLAGS.output, "identity_consistency.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"Identity consistency of {len(pairs)} reconstructed faces ({root}); neutral shapes, "
        "front face, rigid alignment, mm.", "",
        "| same person mm | different people mm | ratio | AUC | pairs (same / different) "
        "| distance from the mean face mm |", "|---|---|---|---|---|---|",
        f"| {scores['same_mm']:.3f} | {scores['different_mm']:.3f} | {scores['ratio']:.3f} "
        f"| {scores['auc']:.3f} | {scores['same_pairs']:.0f} / "
        f"{scores['different_pairs']:.0f} | {to_mean:.3f} |", "",
        "Same-person pairs: " + ", ".join(f"{r['face_a']}–{r['face_b']} {r['distance_mm']:.2f}"
                                          for r in rows if r["same_person"]), ""]
    text = "\n".join(lines)
    with open(os.path.join(FLAGS.output, "identity_consistency.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    app.run(main)
