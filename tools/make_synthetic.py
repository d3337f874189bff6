"""Write the seeded synthetic ground-truth set (see recon_tf/data/synthetic.py).

    python tools/make_synthetic.py --num=2000 --output=data/synthetic --seed=0

Writes ``<output>/synthetic-SSSSS-of-NNNNN.tfrecord`` shards (the training
TFRecord schema plus truth extras ``coeffs``, ``vertices``, ``displacement``,
``albedo_map``) and ``<output>/manifest.json`` (config, seed, counts).
Example ``i`` depends only on ``(seed, i)``. Re-running skips finished shards
(each is written to a temporary file and renamed), so a killed run resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_integer("num", 100, "Number of examples.")
flags.DEFINE_string("output", "data/synthetic", "Output directory.")
flags.DEFINE_integer("seed", 0, "Seed of the set; example i depends only on (seed, i).")
flags.DEFINE_integer("shard_size", 100, "Examples per TFRecord shard.")
flags.DEFINE_integer("batch_size", 8, "Examples rendered together.")
flags.DEFINE_integer("image_size", 224, "Image size in pixels.")
flags.DEFINE_integer("uv_size", 128, "Size of the truth UV maps (displacement, albedo).")
flags.DEFINE_integer("supersample", 2, "Render at this factor × image_size, then downsample.")
flags.DEFINE_string("face_model", None, "recon_tf face-model .npz (default: ICT-FaceKit, "
                    "bfm.load_default_face_model()).")
flags.DEFINE_string("assets_dir", None,
                    "Assets root (default: $RECON_TF_ASSETS or ../shared/assets).")


def write_set(output: str, num: int, seed: int, shard_size: int, batch_size: int,
              renderer) -> list[str]:
    """Render and write all shards that do not exist yet; return all shard paths."""
    from recon_tf.data.synthetic import shard_path
    from recon_tf.data.tfrecord import write_tfrecord

    if num < 1 or shard_size < 1 or batch_size < 1:
        raise ValueError("num, shard_size and batch_size must be positive")
    os.makedirs(output, exist_ok=True)
    num_shards = (num + shard_size - 1) // shard_size
    paths = [shard_path(output, s, num_shards) for s in range(num_shards)]
    todo = [s for s in range(num_shards) if not os.path.exists(paths[s])]
    if len(todo) < num_shards:
        logging.info("resuming: %d of %d shards already written", num_shards - len(todo),
                     num_shards)
    total = sum(min(shard_size, num - s * shard_size) for s in todo)
    done, start = 0, time.time()
    for s in todo:
        indices = list(range(s * shard_size, min(num, (s + 1) * shard_size)))
        records = []
        for b in range(0, len(indices), batch_size):
            batch = indices[b:b + batch_size]
            rendered = renderer.render([renderer.sample(seed, i) for i in batch])
            records += [renderer.encode(seed, i, r) for i, r in zip(batch, rendered)]
            done += len(batch)
            rate = done / max(time.time() - start, 1e-9)
            logging.info("%d/%d examples, %.1f img/s, ETA %.0f s", done, total, rate,
                         (total - done) / rate)
        write_tfrecord(paths[s], records)
    return paths


def main(argv: list[str]) -> None:
    del argv
    from bfm import load_default_face_model
    from recon_tf import assets
    from recon_tf.data.synthetic import EXTRA_NAMES, SyntheticConfig, SyntheticRenderer
    from recon_tf.face_model import load_face_model

    if FLAGS.assets_dir:
        assets.set_assets_dir(FLAGS.assets_dir)
    config = SyntheticConfig(image_size=FLAGS.image_size, uv_size=FLAGS.uv_size,
                             supersample=FLAGS.supersample)
    face_model = (load_face_model(FLAGS.face_model) if FLAGS.face_model
                  else load_default_face_model())
    manifest_path = os.path.join(FLAGS.output, "manifest.json")
    manifest = {"num": FLAGS.num, "seed": FLAGS.seed, "shard_size": FLAGS.shard_size,
                "face_model": face_model.name, "layout": dataclasses.asdict(face_model.layout),
                "config": config.to_json(), "extras": list(EXTRA_NAMES)}
    manifest = json.loads(json.dumps(manifest))  # tuples → lists, as read back
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            old = json.load(f)
        if old != manifest:
            raise app.UsageError(f"{manifest_path} describes another set ({old}); use a new "
                                 "--output or delete it")
    os.makedirs(FLAGS.output, exist_ok=True)
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
    renderer = SyntheticRenderer(face_model, config)
    paths = write_set(FLAGS.output, FLAGS.num, FLAGS.seed, FLAGS.shard_size, FLAGS.batch_size,
                      renderer)
    print(f"wrote {FLAGS.num} examples in {len(paths)} shards to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
