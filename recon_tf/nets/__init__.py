"""Frozen third-party networks used by the losses and the preprocessing.

Modules: ``tfjs`` (a loader for TF.js graph-model directories), ``identity``
(face-recognition networks for the identity loss L_id, Eq. 9) and ``facemesh``
(MediaPipe FaceMesh dense landmarks). Import the submodules directly; this
package imports nothing heavy.
"""
