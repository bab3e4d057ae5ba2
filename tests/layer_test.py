"""One helper that exercises a layer: shapes, weight counts, `.keras` round trip, a train step."""

import os
import tempfile

import keras
import numpy as np


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def run_layer_test(layer, inputs, expected_shapes, expected_trainable=None):
    """Build `layer` on `inputs` (array or list of arrays) and check it end to end.

    Checks the output shapes, the number of trainable scalars, that the layer
    serialises inside a functional model to `.keras` and reloads with identical
    outputs, and that one SGD step on MSE changes its weights.
    """
    multi = isinstance(inputs, list)
    inputs = _as_list(inputs)
    symbolic = [keras.Input(x.shape[1:], batch_size=x.shape[0]) for x in inputs]
    sym_in = symbolic if multi else symbolic[0]
    model = keras.Model(sym_in, layer(sym_in))
    feed = inputs if multi else inputs[0]
    outputs = _as_list(model(feed))
    expected = expected_shapes if isinstance(expected_shapes, list) else [expected_shapes]
    assert [tuple(o.shape) for o in outputs] == [tuple(s) for s in expected]
    if expected_trainable is not None:
        count = sum(int(np.prod(v.shape)) for v in layer.trainable_variables)
        assert count == expected_trainable, (count, expected_trainable)

    path = os.path.join(tempfile.mkdtemp(), "layer.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    for a, b in zip(outputs, _as_list(reloaded(feed))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert reloaded.layers[-1].get_config() == layer.get_config()

    before = [v.numpy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    targets = [np.random.RandomState(0).rand(*o.shape).astype("float32") for o in outputs]
    model.train_on_batch(feed, targets if len(targets) > 1 else targets[0])
    after = [v.numpy() for v in model.trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), "train step changed nothing"
    return model
