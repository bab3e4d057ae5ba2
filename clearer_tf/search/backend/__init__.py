"""Per-backend `train_step` of `SupernetSearch` (as Keras splits `keras/src/backend/*/trainer.py`).

`SearchStep` is the mixin of the running Keras backend; `replicas_in_sync()` the number of
devices a batch is split over (a `tf.distribute` strategy, a `keras.distribution`).
"""

import keras

if keras.backend.backend() == "jax":
    from clearer_tf.search.backend.jax import JaxSearchStep as SearchStep
    from clearer_tf.search.backend.jax import replicas_in_sync
elif keras.backend.backend() == "tensorflow":
    from clearer_tf.search.backend.tensorflow import TensorFlowSearchStep as SearchStep
    from clearer_tf.search.backend.tensorflow import replicas_in_sync
else:
    raise ImportError(f"the search runs on the TensorFlow and JAX backends, not {keras.backend.backend()!r}")

__all__ = ["SearchStep", "replicas_in_sync"]
