"""recon_tf: self-supervised coarse-to-fine monocular 3D face reconstruction in TF2.

A reproduction of Huang, Shi, Liu, Tang, "Self-supervised learning for
fine-grained monocular 3D face reconstruction in the wild". Modules, one per
concern: ``assets`` (where shared files live), ``coeffs`` (the 222-coefficient
layout), ``face_model`` (Eq. 1-3), ``camera`` (Eq. 4), ``lighting`` (Eq. 5),
``render`` (rasterizer op, shading, UV ops), ``export`` (OBJ/PLY),
``preprocess`` and ``data``.
"""

__version__ = "0.1.0"
