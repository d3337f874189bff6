"""Data layer: data-set readers, the TFRecord schema, and the tf.data pipeline.

* :mod:`recon_tf.data.readers`: CelebA / LFW / LS3D-W / NoW / folder layouts → records.
* :mod:`recon_tf.data.tfrecord`: the example schema (``encode_example``, ``parse_example``).
* :mod:`recon_tf.data.pipeline`: ``make_dataset`` (interleave, decode, flip + colour
  jitter, shuffle, batch, prefetch).
"""
