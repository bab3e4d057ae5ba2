"""NumPy 2's `__array__ copy` DeprecationWarning: none from our code or tests; the pytest
configuration filters only Keras's own (third-party) ones."""

import configparser
import os
import warnings

import keras
import numpy as np

from layer_test import run_layer_test

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESSAGE = "__array__ implementation doesn't accept a copy keyword"


def test_layer_helper_raises_no_copy_keyword_warning_of_ours():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_layer_test(keras.layers.Dense(3), np.ones((2, 4), np.float32), (2, 3), expected_trainable=15)
    ours = [w for w in caught if MESSAGE in str(w.message) and "site-packages" not in w.filename]
    assert not ours, [f"{w.filename}:{w.lineno}" for w in ours]


def test_pytest_filters_only_keras_copy_keyword_warnings():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    filters = [f.strip() for f in config["tool:pytest"]["filterwarnings"].splitlines()
               if f.strip() and not f.strip().startswith("#")]
    assert filters == [f"ignore:{MESSAGE}:DeprecationWarning:keras\\.src\\.backend\\.tensorflow\\.core"]
