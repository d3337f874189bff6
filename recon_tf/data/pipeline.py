"""The ``tf.data`` input pipeline over the TFRecord schema of :mod:`recon_tf.data.tfrecord`.

``make_dataset`` = list files → reads (training: parallel interleave over
shuffled files; evaluation: in file order) → (shuffle, repeat) → parallel
parse/decode → (augmentation) → batch → prefetch, every parallel stage
AUTOTUNEd.

Augmentation (training only, per example, reproducible from ``seed``):

* horizontal flip with probability ``flip_prob``: image and mask columns are
  reversed; landmark x becomes ``W - 1 - x`` (pixel centres at integer
  coordinates, so column j maps to column W-1-j) and the 68 points are
  re-indexed with :data:`FLIP_PERMUTATION_68` (the subject's left and right
  swap); the crop transform is composed with the flip so it still maps the
  source photo onto the (flipped) crop. Extra truth tensors cannot be flipped
  generically, so flipping is refused when extras are requested.
* colour jitter on the image only: brightness (additive, ±``brightness``),
  contrast and saturation (factors in [1 − c, 1 + c]), then clipped to [0, 1].

Batched elements are dicts: ``image`` float32 [B, H, W, 3] in [0, 1],
``landmarks`` float32 [B, 68, 2], ``mask`` float32 [B, H, W, 1] in {0, 1},
``transform`` float32 [B, 2, 3], ``source_path``/``subject`` string [B], and
the requested extras.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from recon_tf.data.tfrecord import parse_example

AUTOTUNE = tf.data.AUTOTUNE

# Index i of a flipped face takes point FLIP_PERMUTATION_68[i] of the original.
FLIP_PERMUTATION_68 = np.array(
    list(range(16, -1, -1))                       # jaw 0-16
    + list(range(26, 16, -1))                     # eyebrows 17-26
    + [27, 28, 29, 30]                            # nose bridge
    + [35, 34, 33, 32, 31]                        # nostrils
    + [45, 44, 43, 42, 47, 46]                    # eye 36-41 <- eye 42-47
    + [39, 38, 37, 36, 41, 40]                    # eye 42-47 <- eye 36-41
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]   # outer lip 48-59
    + [64, 63, 62, 61, 60, 67, 66, 65],           # inner lip 60-67
    np.int32)


def flip_example(example: Mapping[str, tf.Tensor]) -> dict:
    """Mirror one parsed example left-right (image, mask, landmarks, transform).

    Args:
      example: a dict from :func:`recon_tf.data.tfrecord.parse_example` (unbatched).
    Returns:
      A new dict; other keys are passed through unchanged.
    """
    out = dict(example)
    image = example["image"]
    width = tf.cast(tf.shape(image)[1], tf.float32)
    out["image"] = tf.reverse(image, axis=[1])
    out["mask"] = tf.reverse(example["mask"], axis=[1])
    lm = tf.gather(tf.cast(example["landmarks"], tf.float32), FLIP_PERMUTATION_68)
    out["landmarks"] = tf.stack([width - 1.0 - lm[:, 0], lm[:, 1]], axis=1)
    t = tf.cast(example["transform"], tf.float32)
    out["transform"] = tf.stack([
        tf.concat([-t[0, :2], [width - 1.0 - t[0, 2]]], axis=0), t[1]], axis=0)
    return out


def color_jitter(image: tf.Tensor, seed: tf.Tensor, brightness: float = 0.1,
                 contrast: float = 0.1, saturation: float = 0.1) -> tf.Tensor:
    """Stateless random brightness/contrast/saturation on float32 [H, W, 3] in [0, 1].

    Args:
      seed: int [2] stateless seed.
      brightness: max additive change.
      contrast, saturation: factors are drawn from [1 − value, 1 + value].
    Returns:
      The jittered image, clipped to [0, 1].
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    if brightness > 0:
        image = tf.image.stateless_random_brightness(image, brightness, seeds[0])
    if contrast > 0:
        image = tf.image.stateless_random_contrast(
            image, 1.0 - contrast, 1.0 + contrast, seeds[1])
    if saturation > 0:
        image = tf.image.stateless_random_saturation(
            tf.clip_by_value(image, 0.0, 1.0), 1.0 - saturation, 1.0 + saturation, seeds[2])
    return tf.clip_by_value(image, 0.0, 1.0)


def augment_example(example: Mapping[str, tf.Tensor], seed: tf.Tensor, flip_prob: float = 0.5,
                    brightness: float = 0.1, contrast: float = 0.1,
                    saturation: float = 0.1) -> dict:
    """Random flip (see :func:`flip_example`) and colour jitter of one example.

    Args:
      example: a parsed, unbatched example.
      seed: int [2] stateless seed.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    out = dict(example)
    if flip_prob > 0:
        do_flip = tf.random.stateless_uniform([], seeds[0]) < flip_prob
        flipped = flip_example(example)
        for key in ("image", "mask", "landmarks", "transform"):
            out[key] = tf.cond(do_flip, lambda k=key: flipped[k], lambda k=key: example[k])
    out["image"] = color_jitter(out["image"], seeds[1], brightness, contrast, saturation)
    return out


def make_dataset(file_pattern: str | Sequence[str], batch_size: int, training: bool,
                 image_size: int | None = 224, augment: bool | None = None,
                 flip_prob: float = 0.5, brightness: float = 0.1, contrast: float = 0.1,
                 saturation: float = 0.1, shuffle_buffer: int = 1024,
                 repeat: bool | None = None, drop_remainder: bool | None = None,
                 extra_names: Sequence[str] = (),
                 extra_shapes: Mapping[str, Sequence[int]] | None = None,
                 seed: int | None = None, cycle_length: int = 8,
                 input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Build the input pipeline.

    Args:
      file_pattern: glob(s) of TFRecord shards, e.g. ``"out/shard-*.tfrecord"``.
      batch_size: examples per batch.
      training: reads files interleaved in parallel, shuffles files and
        examples, repeats, augments, drops the last partial batch, and lets
        parallel stages be non-deterministic (for speed) unless ``seed`` is
        given. Otherwise records come in file order (sorted file names).
      image_size: expected crop side (static shapes); ``None`` leaves it dynamic
        (then all records of a batch must share one size).
      augment, repeat, drop_remainder: override the ``training`` defaults.
      flip_prob, brightness, contrast, saturation: see :func:`augment_example`.
      shuffle_buffer: serialized examples held for shuffling.
      extra_names, extra_shapes: extra truth tensors to parse (see tfrecord).
      seed: makes file order, shuffling and augmentation reproducible.
      cycle_length: files read concurrently.
      input_context: from ``strategy.distribute_datasets_from_function``: this
        pipeline reads every ``num_input_pipelines``-th file (so pass at least
        that many shards) and ``batch_size`` is then the per-pipeline batch.
    Returns:
      A ``tf.data.Dataset`` of batched dicts (see the module docstring).
    Raises:
      FileNotFoundError: no file matches the pattern.
      ValueError: flipping was requested together with extra tensors.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {patterns}; create them with "
                                "tools/preprocess.py (or tools/make_synthetic.py)")
    if input_context is not None and input_context.num_input_pipelines > 1:
        files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
        if not files:
            raise ValueError(f"fewer shards than the {input_context.num_input_pipelines} "
                             "input pipelines")
    augment = training if augment is None else augment
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    if augment and flip_prob > 0 and extra_names:
        raise ValueError("horizontal flips would make the extra truth tensors "
                         f"{list(extra_names)} inconsistent; pass flip_prob=0")
    deterministic = (not training) or seed is not None
    if training:
        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(
            len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
                           num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    else:  # records in file order, so results line up with the preprocessing report
        ds = tf.data.TFRecordDataset(files, buffer_size=8 << 20)
    if training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(lambda s: parse_example(s, image_size, extra_names, extra_shapes),
                num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda ex, s: augment_example(ex, s, flip_prob, brightness, contrast, saturation),
            num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                  num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE)
