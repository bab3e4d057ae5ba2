"""The CLEARER architecture search (paper Sec. 3.3): `SupernetSearch`, a `keras.Model` driven by `fit`.

* `model.py`: `SupernetSearch` (the supernet, both optimisers, the metrics, `genotype()`);
* `backend/tensorflow.py`, `backend/jax.py`: its `train_step` on each backend;
* `objective.py`: L_res, Eq. 2 (L_res + lambda_1 L_arch + lambda_2 L_comp), clipping and decay;
* `optimizers.py`: SGD for the weights and Adam for alpha in one `MultiOptimizer`;
* `run.py`: `run_search`, the whole run (data streams, callbacks, outputs) behind `search.py`.
"""

from clearer_tf.search.model import SupernetSearch
from clearer_tf.search.objective import batch_norm_layers, validate
from clearer_tf.search.run import SearchResult, run_config, run_search

__all__ = ["SearchResult", "SupernetSearch", "batch_norm_layers", "run_config", "run_search", "validate"]
