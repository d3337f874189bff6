"""Convert a third-party face model into the recon_tf face-model file.

Examples::

    python -m bfm.convert --source=ict \
        --input=../shared/assets/face_models/ict_facekit/ict_face_region_9409.npz \
        --output=models/ict.npz
    python -m bfm.convert --source=ict_obj --input=ICT-FaceKit/FaceXModel \
        --output=models/ict_full.npz
    python -m bfm.convert --source=bfm2009 --input=BFM/01_MorphableModel.mat \
        --exp_pca_bin=BFM/Exp_Pca.bin --exp_std=BFM/std_exp.txt \
        --exp_idx=BFM/BFM_exp_idx.mat --keypoints=BFM/keypoints.txt --output=models/bfm.npz
    python -m bfm.convert --source=deep3d --input=BFM/BFM_model_front.mat \
        --output=models/bfm_front.npz
"""

from __future__ import annotations

from absl import app, flags, logging

from bfm.bfm2009 import convert_bfm2009
from bfm.deep3d import convert_deep3d
from bfm.ict import convert_obj_dir, load_ict_npz
from recon_tf.face_model import save_face_model

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", "ict", ["ict", "ict_obj", "bfm2009", "deep3d"],
                  "Kind of input: ICT face-region npz, ICT OBJ directory, BFM 2009 "
                  "01_MorphableModel.mat, or Deep3DFace BFM_model_front.mat.")
flags.DEFINE_string("input", "../shared/assets/face_models/ict_facekit/ict_face_region_9409.npz",
                    "Input file or directory.")
flags.DEFINE_string("output", "face_model.npz", "Output recon_tf face-model file (.npz).")
flags.DEFINE_string("exp_pca_bin", None, "bfm2009: FaceWarehouse Exp_Pca.bin.")
flags.DEFINE_string("exp_std", None, "bfm2009: std_exp.txt for Exp_Pca.bin.")
flags.DEFINE_string("ddfa_expression", None, "bfm2009: 3DDFA Model_Expression.mat instead.")
flags.DEFINE_string("exp_idx", None, "bfm2009: BFM_exp_idx.mat (trimIndex).")
flags.DEFINE_string("keypoints", None, "bfm2009: 68 1-based landmark ids (.mat/.npy/.txt).")
flags.DEFINE_string("uv", None, "bfm2009: optional BFM_UV.mat with key UV.")
flags.DEFINE_integer("num_id", 80, "bfm2009: identity PCs kept.")
flags.DEFINE_integer("num_tex", 80, "bfm2009: albedo PCs kept.")


def convert(source: str, path: str) -> dict:
    """Run the converter for ``source`` on ``path`` (extra files from flags)."""
    if source == "ict":
        return load_ict_npz(path)
    if source == "ict_obj":
        return convert_obj_dir(path)
    if source == "deep3d":
        return convert_deep3d(path)
    return convert_bfm2009(path, exp_pca_bin=FLAGS.exp_pca_bin, exp_std_txt=FLAGS.exp_std,
                           ddfa_expression_mat=FLAGS.ddfa_expression, exp_idx_mat=FLAGS.exp_idx,
                           keypoints=FLAGS.keypoints, uv_mat=FLAGS.uv, n_id=FLAGS.num_id,
                           n_tex=FLAGS.num_tex)


def main(argv: list[str]) -> None:
    del argv
    arrays = convert(FLAGS.source, FLAGS.input)
    save_face_model(FLAGS.output, arrays)
    logging.info("wrote %s: %d vertices, %d triangles, modes id/exp/albedo = %d/%d/%d",
                 FLAGS.output, len(arrays["mean_shape"]), len(arrays["triangles"]),
                 len(arrays["id_basis"]), len(arrays["exp_basis"]), len(arrays["albedo_basis"]))


if __name__ == "__main__":
    app.run(main)
