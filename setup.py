"""Install recon_tf and build its rasterizer op.

``pip install --no-build-isolation -e .[dev]`` compiles the TensorFlow custom
op (``recon_tf/render/kernels``) with ``tf.sysconfig`` flags, so the op always
matches the installed TensorFlow's C++ ABI. TensorFlow must be installed first
(``--no-build-isolation`` keeps pip from downloading a second copy into an
isolated build environment). The CUDA kernel is compiled too when ``nvcc`` is
found; at run time without a GPU the CPU kernel is used.
"""

import importlib.util
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop
from setuptools.command.editable_wheel import editable_wheel

HERE = os.path.dirname(os.path.abspath(__file__))


def _build_op() -> None:
    """Compile the rasterizer op in place (recon_tf/render/_rasterize_op*.so)."""
    spec = importlib.util.spec_from_file_location(
        "build_op", os.path.join(HERE, "recon_tf", "render", "build_op.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(verbose=True)


class BuildPyWithOp(build_py):
    def run(self):
        _build_op()
        super().run()


class EditableWithOp(editable_wheel):
    def run(self):
        _build_op()
        super().run()


class DevelopWithOp(develop):
    def run(self):
        _build_op()
        super().run()


setup(
    name="recon_tf",
    version="0.1.0",
    description=("TensorFlow 2 reproduction of self-supervised coarse-to-fine "
                 "monocular 3D face reconstruction (Huang et al.)"),
    python_requires=">=3.10",
    packages=find_packages(include=["recon_tf", "recon_tf.*", "bfm", "bfm.*"]),
    package_data={"recon_tf.render": ["kernels/*.cc", "kernels/*.h", "*.so"]},
    install_requires=[
        "tensorflow==2.21.*",
        "numpy",
        "scipy",
        "absl-py",
        "opencv-python-headless",
        "mtcnn==1.0.0",
        "onnxruntime",
        "pillow",
        "pillow-heif",  # HEIC/HEIF phone photos (recon_tf.preprocess.image_io)
        "tensorboard",
        "matplotlib",  # NoW cumulative error curves (recon_tf.now_eval)
    ],
    extras_require={
        "dev": ["pytest", "ruff", "scikit-image"],  # SSIM cross-check in tests
        "graphics": ["tensorflow-graphics"],
    },
    cmdclass={"build_py": BuildPyWithOp, "editable_wheel": EditableWithOp,
              "develop": DevelopWithOp},
)
