"""Table 2: PSNR / SSIM / RMSE of the coarse and fine-grained renders on LS3D-W.

    python experiments/table2_ls3dw.py --data_root=/data/LS3D-W              # the paper's data
    python experiments/table2_ls3dw.py --data_root=/data/LS3D-W \\
        --coarse_model=runs/coarse --fine_model=runs/fine                   # + learned stages
    python experiments/table2_ls3dw.py --limit=1                            # default data

Protocol:

* **Data.** LS3D-W images with a 68-point annotation of the same stem (``.pts``,
  ``.mat`` or ``.t7``; :func:`recon_tf.data.readers.read_ls3dw`), every annotated image
  under ``--data_root`` in sorted order, ``--limit=N`` keeps the first N. The paper used
  5,572 LS3D-W images "after detection and alignment with [48]" and does not say which
  ones; point ``--data_root`` at the subset you want (e.g. one of LS3D-W's folders) and
  the table reports how many images were selected and scored. Without ``--data_root``:
  the default data, the 3 shared photos with ground-truth ``.pts``
  (``<assets>/images/faces_68pts``) read by the same LS3D-W reader (NOT LS3D-W).
* **Crop.** The annotated face is selected (the detector box holding most annotated
  points), landmarked (PFLD, 68 points) and aligned to a 224² crop (``--image_size``)
  by Deep3DFace's 5-point scheme, as the paper's coarse stage ([22]).
* **Detection failures.** An image whose annotated face is not detected is counted,
  excluded from every mean (all methods score the same images) and listed under the
  table and in ``<output>/table2_failures.txt``.
* **Methods.** Ours (Coarse) = per-photo fitting (always) and a trained R-Net
  (``--coarse_model``; omitted with a note otherwise); Ours (Fine-grained) = the fine
  stage on top of each, trained modules (``--fine_model``) or per-photo fine fitting.
* **Metric.** :func:`recon_tf.metrics.image_metrics` (PSNR, SSIM, RMSE on 0–255) of the
  render composited over the photo, per image over ``--region`` (default ``face``: the
  rendered-face mask ∩ the convex hull of the annotated 68 points; printed with
  :func:`recon_tf.metrics.describe_region`), averaged over the scored images.

Writes ``<output>/table2.md`` and ``table2.csv`` (our rows beside the paper's,
:data:`PAPER_TABLE2`), ``table2_per_image.csv``, ``table2_failures.txt`` and the first
``--save_renders`` renders; prints the Markdown.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _tables  # noqa: E402  (experiments/_tables.py: what the table scripts share)

FLAGS = flags.FLAGS
_tables.define_region_flag()

# Table 2 of the paper (LS3D-W, 5,572 images): method, PSNR ↑, SSIM ↑, RMSE ↓.
PAPER_TABLE2 = (
    ("Deep3DFace [22]", 22.491, 0.803, 21.184),
    ("MGCNet [43]", 22.787, 0.815, 20.095),
    ("Tran et al. [38]", 19.038, 0.772, 29.335),
    ("Chen et al. [25](Coarse)", 23.821, 0.840, 17.427),
    ("Chen et al. [25](Detail)", 24.055, 0.841, 16.848),
    ("DECA [23](Coarse)", 20.382, 0.767, 26.303),
    ("DECA [23](Detail)", 20.391, 0.764, 26.278),
    ("EMOCA [24](Coarse)", 19.993, 0.755, 27.349),
    ("EMOCA [24](Detail)", 20.022, 0.752, 27.269),
    ("Ours(Coarse)", 24.263, 0.846, 16.639),
    ("Ours(Fine-grained)", 24.486, 0.854, 16.145),
)
SPEC = _tables.TableSpec(
    2, "PSNR / SSIM / RMSE on the LS3D-W dataset (paper's Table 2)",
    _tables.IMAGE_COLUMNS, _tables.paper_rows(PAPER_TABLE2, ("psnr", "ssim", "rmse")),
    "5,572 LS3D-W images after detection and alignment with [48]")


def main(argv: list[str]) -> None:
    del argv
    _tables.run_image_table(SPEC, "ls3d")


if __name__ == "__main__":
    FLAGS.set_default("output", "outputs/table2")
    app.run(main)
