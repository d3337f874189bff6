"""Face-model converters: third-party model files → the recon_tf face-model file.

Modules: ``ict`` (ICT-FaceKit npz and OBJ directory), ``bfm2009`` (BFM 2009
``01_MorphableModel.mat`` + FaceWarehouse ``Exp_Pca.bin`` or 3DDFA
``Model_Expression.mat``), ``deep3d`` (Deep3DFace ``BFM_model_front.mat``),
``albedo`` (our default albedo basis for models without one), ``regions``
(front/skin masks and face regions from landmarks), ``default`` (the default
model: ICT-FaceKit from the assets, converted once and cached), ``convert``
(the command line). The library (``recon_tf.face_model``) reads only the
converted format and never imports ``bfm``; converters depend on the library,
never the reverse. See ``bfm/README.md`` for where each source file comes from.

Exports: :func:`default_face_model_path` (the cached recon_tf file of the
default model) and :func:`load_default_face_model` (it, as a ``FaceModel``).
"""

from bfm.default import default_face_model_path, load_default_face_model

__all__ = ["default_face_model_path", "load_default_face_model"]
