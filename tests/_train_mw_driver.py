"""Multi-worker R-Net training driver for tests/test_train_coarse.py.

    TF_CONFIG=... python tests/_train_mw_driver.py --data='dir/*.tfrecord' --out=w0.npz

Builds the strategy first (``recon_tf.training.make_strategy("auto")``:
``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster, else
``MirroredStrategy``), then R-Net + ``CoarseStage`` + ``make_train_step``
and the ``distribute_datasets_from_function`` input exactly as
``experiments/train_coarse.py`` does, trains ``--steps`` steps and writes
``--out`` (.npz): every model weight (``w0000`` ...), the per-step losses,
the number of replicas, this worker's first-batch source paths and, with
``--emulate_workers=N``, the trainable weights of a one-process emulation of
N workers (each worker's batch through its own forward pass, gradients
summed) started from the same initial weights.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=4, help="global batch")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--emulate_workers", type=int, default=0)
    args = parser.parse_args()

    from recon_tf import training

    strategy = training.make_strategy("auto")  # first: starts the collective runtime
    import keras
    import numpy as np
    import tensorflow as tf

    from bfm import load_default_face_model
    from recon_tf import coarse
    from recon_tf.data.pipeline import make_dataset
    from recon_tf.fitting import Fitter
    from recon_tf.losses import CoarseLossWeights
    from recon_tf.nets import rnet

    keras.utils.set_random_seed(args.seed)
    face_model = load_default_face_model()
    weights = CoarseLossWeights.for_model(face_model, id_weight=0.0)
    objective = Fitter(face_model, weights, identity_net=None, image_size=args.image_size)

    def build():
        return rnet.build_rnet("small", face_model.layout, args.image_size,
                               exp_bounds=face_model.exp_bounds)

    with strategy.scope():
        model = build()
        optimizer = keras.optimizers.Adam(learning_rate=args.learning_rate)
        optimizer.build(model.trainable_variables)
    initial = [w.numpy() for w in model.weights]
    stage = coarse.CoarseStage(model, objective)
    step_fn = coarse.make_train_step(stage, optimizer, strategy, args.batch_size)

    def make(context, keep_strings=False):
        ds = make_dataset(args.data, context.get_per_replica_batch_size(args.batch_size),
                          training=True, image_size=args.image_size, augment=True,
                          seed=args.seed, input_context=context)
        ds = ds.map(coarse.mark_landmark_source)  # as experiments/train_coarse.py
        return ds if keep_strings else ds.map(training.strip_strings)

    dist = strategy.distribute_datasets_from_function(make)
    iterator = iter(dist)
    losses = [float(step_fn(next(iterator))["total"]) for _ in range(args.steps)]

    # The same pipeline this worker fed the strategy, strings kept: which files it read.
    task_type, task_id = training.task_info(strategy)
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    workers = max(sum(len(v) for v in spec.values()), 1)
    context = tf.distribute.InputContext(num_input_pipelines=workers,
                                         input_pipeline_id=task_id,
                                         num_replicas_in_sync=strategy.num_replicas_in_sync)
    first = next(iter(make(context, keep_strings=True)))
    out = {f"w{i:04d}": w.numpy() for i, w in enumerate(model.weights)}
    out.update(losses=np.array(losses), replicas=strategy.num_replicas_in_sync,
               workers=workers, task_id=task_id,
               first_paths=np.array([p.decode() for p in first["source_path"].numpy()]))

    if args.emulate_workers:
        out.update(_emulate(args, build, objective, initial, make, args.emulate_workers))
    np.savez(args.out, **out)
    print(f"driver done: {task_type}:{task_id} replicas={strategy.num_replicas_in_sync} "
          f"losses={losses}", flush=True)


def _emulate(args, build, objective, initial, make, workers: int) -> dict:
    """N workers in one process: each worker's pipeline, forward pass (its own
    BatchNorm statistics) and global-batch-averaged loss; gradients summed."""
    import keras
    import numpy as np
    import tensorflow as tf

    from recon_tf import coarse

    model = build()
    model.set_weights(initial)
    optimizer = keras.optimizers.Adam(learning_rate=args.learning_rate)
    optimizer.build(model.trainable_variables)
    stage = coarse.CoarseStage(model, objective)
    iterators = [iter(make(tf.distribute.InputContext(workers, i, workers)))
                 for i in range(workers)]

    @tf.function
    def step(batches):
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_sum(stage.terms(b, training=True)[1]["total"])
                             for b in batches]) / args.batch_size
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = [float(step([next(it) for it in iterators])) for _ in range(args.steps)]
    out = {f"emulated_t{i:04d}": v.numpy() for i, v in enumerate(model.trainable_variables)}
    out["emulated_losses"] = np.array(losses)
    out["trainable_index"] = np.array([
        next(j for j, w in enumerate(model.weights) if w is v)
        for v in model.trainable_variables])
    return out


if __name__ == "__main__":
    main()
