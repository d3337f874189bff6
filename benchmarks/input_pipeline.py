"""Input-pipeline throughput next to a ResNet-50 train step, in one run.

    python benchmarks/input_pipeline.py                      # synthetic shards in a temp dir
    python benchmarks/input_pipeline.py --file_pattern='/data/celeba_tfr/shard-*.tfrecord'

Measures (1) images/s of ``recon_tf.data.pipeline.make_dataset`` in training
mode (interleave, shuffle, PNG/JPEG decode, flip + colour jitter, batching,
prefetch), iterated alone; (2) images/s of a
``tf.keras.applications.ResNet50(weights=None)`` train step (forward,
backward, Adam update) at ``--batch_size`` on random 224² inputs. Prints a
table with the ratio: above 1, the pipeline is not the bottleneck. Without
``--file_pattern`` it first writes ``--num_images`` synthetic examples
(smooth random images, landmarks, elliptic masks) into a temporary folder.
CPU speed varies over time on shared machines: compare numbers from one run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("file_pattern", "", "TFRecord shards to read; empty: write synthetic ones.")
flags.DEFINE_integer("num_images", 256, "Synthetic examples to write (without --file_pattern).")
flags.DEFINE_integer("num_shards", 4, "Synthetic shards to write.")
flags.DEFINE_enum("image_format", "png", ["png", "jpeg"], "Encoding of synthetic images.")
flags.DEFINE_integer("image_size", 224, "Image side in pixels.")
flags.DEFINE_integer("batch_size", 8, "Batch size for both measurements.")
flags.DEFINE_integer("pipeline_batches", 100, "Timed pipeline batches (after warm-up).")
flags.DEFINE_integer("model_steps", 5, "Timed ResNet-50 train steps (after 1 warm-up step).")
flags.DEFINE_integer("warmup_batches", 10, "Untimed pipeline batches first.")


def write_synthetic_shards(folder: str, num_images: int, num_shards: int, image_size: int,
                           image_format: str = "png", seed: int = 0) -> str:
    """Write synthetic examples in the TFRecord schema; returns the file pattern."""
    import cv2

    from recon_tf.data.tfrecord import encode_example, write_tfrecord

    rng = np.random.default_rng(seed)
    per_shard = -(-num_images // num_shards)
    for s in range(num_shards):
        records = []
        for _ in range(min(per_shard, num_images - s * per_shard)):
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = cv2.resize(coarse, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
            image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
            mask = np.zeros((image_size, image_size), np.uint8)
            c = image_size // 2
            cv2.ellipse(mask, (c, c), (int(0.35 * image_size), int(0.45 * image_size)), 0, 0,
                        360, 255, -1)
            landmarks = rng.uniform(0.2, 0.8, (68, 2)).astype(np.float32) * image_size
            records.append(encode_example(image, landmarks, mask, "synthetic", np.eye(2, 3),
                                          image_format=image_format))
        write_tfrecord(os.path.join(folder, f"shard-{s:05d}-of-{num_shards:05d}.tfrecord"),
                       records)
    return os.path.join(folder, "shard-*.tfrecord")


def pipeline_images_per_second(pattern: str, batch_size: int, image_size: int, batches: int,
                               warmup: int) -> float:
    """Images/s of the training pipeline iterated on its own."""
    from recon_tf.data.pipeline import make_dataset

    it = iter(make_dataset(pattern, batch_size, training=True, image_size=image_size))
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    batch["image"].numpy()
    return batches * batch_size / (time.perf_counter() - start)


def resnet50_images_per_second(batch_size: int, image_size: int, steps: int) -> float:
    """Images/s of a ResNet-50 train step (forward + backward + Adam) on random inputs."""
    import tensorflow as tf

    model = tf.keras.applications.ResNet50(weights=None, input_shape=(image_size, image_size, 3))
    optimizer = tf.keras.optimizers.Adam(1e-4)
    images = tf.random.uniform([batch_size, image_size, image_size, 3])
    labels = tf.random.uniform([batch_size], 0, 1000, tf.int32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    step().numpy()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.numpy()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        pattern = FLAGS.file_pattern
        if not pattern:
            pattern = write_synthetic_shards(tmp, FLAGS.num_images, FLAGS.num_shards,
                                             FLAGS.image_size, FLAGS.image_format)
        pipe = pipeline_images_per_second(pattern, FLAGS.batch_size, FLAGS.image_size,
                                          FLAGS.pipeline_batches, FLAGS.warmup_batches)
    model = resnet50_images_per_second(FLAGS.batch_size, FLAGS.image_size, FLAGS.model_steps)
    source = FLAGS.file_pattern or f"{FLAGS.num_images} synthetic {FLAGS.image_format} images"
    rows = [("input pipeline (training, augmented)", f"{pipe:.1f}"),
            (f"ResNet-50 train step (batch {FLAGS.batch_size}, {FLAGS.image_size}²)",
             f"{model:.1f}"),
            ("ratio pipeline / model", f"{pipe / model:.1f}x")]
    width = max(len(r[0]) for r in rows)
    print(f"\nsource: {source}; cores: {os.cpu_count()}")
    print(f"{'stage':<{width}}  images/s")
    print(f"{'-' * width}  --------")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>8}")


if __name__ == "__main__":
    app.run(main)
