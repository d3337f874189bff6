"""Table 5: ablation of the fine stage on CelebA — full model vs without the wavelet
transform perception model / the depth displacement module / the albedo module.

    python experiments/table5_ablation.py --data_root=/data/celeba \\
        --coarse_model=runs/coarse --full_run=runs/fine \\
        --no_wavelet_run=runs/fine_no_wavelet --no_displacement_run=runs/fine_no_disp \\
        --no_albedo_run=runs/fine_no_albedo                 # evaluate given runs
    python experiments/table5_ablation.py --limit=2         # default data, tiny runs

Protocol:

* **Variants.** Each is a ``experiments/train_fine.py`` run with the Table 5 switches
  ``--use_wavelet``, ``--use_displacement``, ``--use_albedo``: full (✓✓✓), without the
  wavelet transform perception model (×✓✓: a learned stride-2 convolution replaces the
  Haar transform), without the depth displacement module (✓×✓), without the albedo
  module (✓✓×: the coarse albedo; not a row of the paper's table). The paper's ×××
  row is the coarse stage alone. A variant's run directory is given by
  ``--<variant>_run``; a variant without one is trained here at small scale
  (``--train``, default on): ``--train_steps`` steps on ``--train_image_size`` crops and
  ``--train_uv_size`` UV maps, on ``--train_data`` or the default data (synthetic faces
  + the shared photos), with ``--coarse_model`` as the frozen coarse stage, or, without
  it, a tiny R-Net trained here for ``--coarse_steps`` steps (``train_coarse.py
  --backbone=small``). Runs live in ``<output>/runs`` and resume when re-run. Tiny runs
  show the path working; they are not the paper's models. Each run's switches are
  checked against its variant (``run_meta.json``). ``--train_jobs`` trains that many
  side by side.
* **Data.** As Table 1: CelebA's test split (``--data_root``, ``--split``, ``--limit``);
  without ``--data_root`` the shared photos ``<assets>/images/faces`` (NOT CelebA).
* **Crop.** Largest face, MTCNN + PFLD, Deep3DFace 5-point alignment to 224²
  (``--image_size``).
* **Coarse coefficients.** Per-photo fitting (always) and the R-Net of
  ``--coarse_model`` when given; every variant's modules refine the same coefficients.
  The modules work in UV space, so runs trained on smaller crops apply to 224² crops.
* **Detection failures.** Counted, excluded from every mean, listed (as Table 1).
* **Metric.** :func:`recon_tf.metrics.image_metrics` (PSNR, SSIM, RMSE on 0–255) of the
  render over the photo, per image over ``--region`` (printed with
  :func:`recon_tf.metrics.describe_region`), averaged.

Writes ``<output>/table5.md`` and ``table5.csv`` (our rows beside the paper's,
:data:`PAPER_TABLE5`), ``table5_per_image.csv``, ``table5_failures.txt`` and the first
``--save_renders`` renders; prints the Markdown.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _tables  # noqa: E402  (experiments/_tables.py: what the table scripts share)

FLAGS = flags.FLAGS
_tables.define_region_flag()

YES, NO = "✓", "×"
# key, label, (wavelet, displacement, albedo) switches.
VARIANTS = (
    ("no_wavelet", "w/o wavelet transform perception model", (False, True, True)),
    ("no_displacement", "w/o depth displacement module", (True, False, True)),
    ("no_albedo", "w/o albedo module", (True, True, False)),
    ("full", "full model", (True, True, True)),
)
for _key, _label, _switches in VARIANTS:
    flags.DEFINE_string(f"{_key}_run", None, f"A train_fine.py run directory of the {_label}; "
                        "without it one is trained here at small scale (see --train).")
flags.DEFINE_bool("train", True, "Train a tiny fine run (and, without --coarse_model, a tiny "
                  "R-Net as their frozen coarse stage) for every variant without a run "
                  "directory; false: such variants are omitted with a note.")
flags.DEFINE_integer("train_steps", 50, "Steps of each tiny fine run.")
flags.DEFINE_integer("coarse_steps", 50, "Steps of the tiny R-Net (no --coarse_model).")
flags.DEFINE_integer("train_image_size", 64, "Crop size of the tiny runs (without "
                     "--coarse_model; with it, the R-Net's own size).")
flags.DEFINE_integer("train_uv_size", 64, "UV size of the tiny fine runs.")
flags.DEFINE_integer("train_batch_size", 4, "Batch size of the tiny runs.")
flags.DEFINE_integer("train_num", 64, "Synthetic faces in the tiny runs' default training set.")
flags.DEFINE_integer("train_filters", 16, "Channels of the tiny modules' first level.")
flags.DEFINE_integer("train_depth", 3, "Encoder levels of the tiny modules.")
flags.DEFINE_integer("train_jobs", 1, "Tiny fine runs trained side by side (each then logs "
                     "to <output>/runs/fine_<variant>.log). Short CPU runs are bound by "
                     "process start-up and tracing, so 2 pays on 2 cores; 1 for GPU runs.")
flags.DEFINE_list("train_data", [], "TFRecord globs the tiny runs train on (default: the "
                  "default data: synthetic faces + the shared photos).")

# Table 5 of the paper (CelebA test): wavelet, displacement, albedo, PSNR ↑, SSIM ↑, RMSE ↓.
PAPER_TABLE5 = (
    ("Ours (coarse only)", NO, NO, NO, 25.794, 0.863, 13.705),
    ("w/o wavelet transform perception model", NO, YES, YES, 25.805, 0.869, 13.606),
    ("w/o depth displacement module", YES, NO, YES, 25.827, 0.870, 13.573),
    ("full model", YES, YES, YES, 25.982, 0.874, 13.329),
)
SWITCHES = ("wavelet", "displacement", "albedo")
SPEC = _tables.TableSpec(
    5, "Ablation of the fine stage on the CelebA test set (paper's Table 5)",
    (("wavelet", "Wavelet", "s"), ("displacement", "Displacement", "s"),
     ("albedo", "Albedo", "s"), *_tables.IMAGE_COLUMNS),
    _tables.paper_rows(PAPER_TABLE5, (*SWITCHES, "psnr", "ssim", "rmse")),
    "CelebA test split (count not given)")


def run_script(script: str, args: list[str], log: str | None = None) -> None:
    """Run a training script; a failure is a UsageError.

    Its output goes to stderr (this script's stdout carries only the table), or, given
    ``log``, to that file (runs trained side by side would interleave their logs)."""
    cmd = [sys.executable, os.path.join(_tables.ROOT, "experiments", script), *args]
    logging.info("running %s%s", " ".join(cmd), f" (log: {log})" if log else "")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [_tables.ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    if log is None:
        if subprocess.run(cmd, cwd=_tables.ROOT, env=env, stdout=sys.stderr).returncode:
            raise app.UsageError(f"{script} failed; see its log above")
        return
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=_tables.ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    if code:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise app.UsageError(f"{script} failed; its log {log} ends:\n{tail}")


def run_scripts(runs: list[tuple[str, list[str], str]], jobs: int) -> None:
    """Run ``(script, args, log file)`` training runs, ``jobs`` at a time.

    One at a time, each logs to stderr; side by side, each to its own log file."""
    if jobs <= 1:
        for script, args, _ in runs:
            run_script(script, args)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(run_script, *run) for run in runs]:
            future.result()


def marks(switches: tuple[bool, bool, bool]) -> dict[str, str]:
    """Table cells ✓/× of (wavelet, displacement, albedo)."""
    return {k: YES if on else NO for k, on in zip(SWITCHES, switches)}


def _train_args(size: int, steps: int, model_dir: str) -> list[str]:
    """Flags both training scripts share."""
    args = [f"--image_size={size}", f"--batch_size={FLAGS.train_batch_size}",
            f"--steps={steps}", f"--model_dir={model_dir}", f"--checkpoint_every={steps}",
            f"--identity_net={FLAGS.identity_net}", f"--camera={FLAGS.camera}",
            f"--default_train_num={FLAGS.train_num}", "--default_eval_num=8",
            "--export=false", "--eval_every=0", "--image_every=0", "--log_every_s=10"]
    if FLAGS.train_data:
        args.append("--data=" + ",".join(FLAGS.train_data))
    args += [f"--{k}={getattr(FLAGS, k)}" for k in ("face_model", "assets_dir")
             if getattr(FLAGS, k)]
    return args


def frozen_coarse(runs: str) -> tuple[str, int]:
    """(the tiny runs' frozen coarse stage, its crop size): ``--coarse_model``, or a
    tiny R-Net trained under ``runs/coarse``."""
    from recon_tf.training import read_meta

    if FLAGS.coarse_model:
        path = FLAGS.coarse_model
        meta = read_meta(path if os.path.isdir(path) else os.path.dirname(path)) or {}
        return path, meta.get("rnet", {}).get("image_size", FLAGS.image_size)
    path = os.path.join(runs, "coarse")
    run_script("train_coarse.py", [
        *_train_args(FLAGS.train_image_size, FLAGS.coarse_steps, path), "--backbone=small"])
    return path, FLAGS.train_image_size


def run_config(path: str, label: str, switches: tuple[bool, bool, bool]) -> dict:
    """A fine run's module configuration, checked against its variant's switches."""
    from recon_tf.training import read_meta

    meta = read_meta(path if os.path.isdir(path) else os.path.dirname(path)) or {}
    if "fine" not in meta:
        raise app.UsageError(f"{path}: not a train_fine.py run (no run_meta.json)")
    found = tuple(meta["fine"][f"use_{k}"] for k in SWITCHES)
    if found != switches:
        raise app.UsageError(f"{path} was trained with {marks(found)}, not as the {label} "
                             f"{marks(switches)}")
    return meta["fine"]


def variant_runs(out: str) -> tuple[dict[str, str], list[str]]:
    """Run directory per variant: given by flag (checked at once), or trained here."""
    runs = {key: getattr(FLAGS, f"{key}_run") for key, _, _ in VARIANTS
            if getattr(FLAGS, f"{key}_run")}
    for key, label, switches in VARIANTS:
        if key in runs:
            run_config(runs[key], label, switches)
    missing = [v for v in VARIANTS if v[0] not in runs]
    if not missing:
        return runs, []
    if not FLAGS.train:
        return runs, [f"{label} omitted: no `--{key}_run` and `--train=false`."
                      for key, label, _ in missing]
    folder = os.path.join(out, "runs")
    coarse, size = frozen_coarse(folder)
    trainings = []
    for key, _, (wavelet, displacement, albedo) in missing:
        runs[key] = os.path.join(folder, f"fine_{key}")
        trainings.append(("train_fine.py", [
            *_train_args(size, FLAGS.train_steps, runs[key]), f"--coarse_model={coarse}",
            f"--use_wavelet={wavelet}", f"--use_displacement={displacement}",
            f"--use_albedo={albedo}", f"--uv_size={FLAGS.train_uv_size}",
            f"--base_filters={FLAGS.train_filters}", f"--depth={FLAGS.train_depth}"],
            runs[key] + ".log"))
    run_scripts(trainings, FLAGS.train_jobs)
    return runs, [f"Tiny runs trained here ({', '.join(v[0] for v in missing)}): "
                  f"{FLAGS.train_steps} steps, {size}² crops, UV {FLAGS.train_uv_size}², batch "
                  f"{FLAGS.train_batch_size}, on "
                  + (", ".join(FLAGS.train_data) if FLAGS.train_data else
                     f"the default data ({FLAGS.train_num} synthetic faces + the shared photos)")
                  + ", frozen coarse stage "
                  + (f"`{coarse}`" if FLAGS.coarse_model else
                     f"a tiny R-Net ({FLAGS.coarse_steps} steps, `{coarse}`)")
                  + ": they show the path working, not the paper's models."]


def ablation_variants(recon, runs: dict[str, str]) -> tuple[list, list[str]]:
    """The fine stage of every variant's run (switches checked against ``run_meta.json``)."""
    variants = []
    for key, label, switches in VARIANTS:
        if key not in runs:
            continue
        path = runs[key]
        config = run_config(path, label, switches)
        FLAGS.fine, FLAGS.fine_model = True, path
        FLAGS.fine_uv_size, FLAGS.wavelet_source = config["uv_size"], config["wavelet_source"]
        settings = _tables.reconstruct.build_fine(recon.face_model, recon.fitter.identity_net)
        variants.append(_tables.FineVariant(key, label, settings, marks(switches)))
    return variants, ["Runs: " + ", ".join(f"{k} = `{p}`" for k, p in runs.items()) + "."]


def main(argv: list[str]) -> None:
    del argv
    data = _tables.select_data("celeba", FLAGS.output)  # checked before any training
    runs, notes = variant_runs(FLAGS.output)
    FLAGS.fine = False  # the variants bring their own fine stages
    _tables.run_image_table(
        SPEC, "celeba", data=data, fines_fn=lambda recon: ablation_variants(recon, runs),
        coarse_label="Ours (coarse only): {source}", fine_label="{fine}: {source} + modules",
        coarse_extra=marks((False, False, False)),
        notes=[*notes, "The paper's Table 5 has no row without the albedo module; ours adds "
               "it."])


if __name__ == "__main__":
    FLAGS.set_default("output", "outputs/table5")
    app.run(main)
