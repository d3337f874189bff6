"""Face-model converters: third-party model files → the recon_tf face-model file.

Modules: ``ict`` (ICT-FaceKit npz and OBJ directory), ``bfm2009`` (BFM 2009
``01_MorphableModel.mat`` + FaceWarehouse ``Exp_Pca.bin`` or 3DDFA
``Model_Expression.mat``), ``deep3d`` (Deep3DFace ``BFM_model_front.mat``),
``albedo`` (our default albedo basis for models without one), ``convert``
(the command line). The library (``recon_tf.face_model``) reads only the
converted format; see ``bfm/README.md`` for where each source file comes from.
"""
