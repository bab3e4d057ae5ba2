"""The supernet against the authors' PyTorch parameter counts and the spec's shapes."""

import keras
import numpy as np
import pytest

from clearer_tf import build_supernet
from clearer_tf.supernet import arch_variables, mixed_columns, mixing_weights, weight_variables

PARALLEL = {2: 92_544, 3: 387_968, 4: 1_568_640}
FUSION = {2: 20_672, 3: 153_536, 4: 784_512}


def count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


@pytest.fixture(scope="module")
def supernet():
    return build_supernet(image_channels=1)


def test_total_trainable_parameters_match_authors(supernet):
    assert count(weight_variables(supernet)) == 12_558_144


def test_column_costs_and_rest_match_authors(supernet):
    columns = mixed_columns(supernet)
    assert len(columns) == 12
    inside = 0
    for col in columns:
        n = len(col.widths)
        assert count(col.parallel.trainable_variables) == PARALLEL[n]
        assert count(col.fusion.trainable_variables) == FUSION[n]
        inside += PARALLEL[n] + FUSION[n]
    assert count(weight_variables(supernet)) - inside == 526_656


def test_alpha_shape_init_and_separation(supernet):
    alphas = arch_variables(supernet)
    assert len(alphas) == 12 and all(tuple(a.shape) == (2,) for a in alphas)
    values = np.stack([np.asarray(a) for a in alphas])
    assert np.abs(values).max() < 1e-2  # N(0, 1e-3^2)
    assert tuple(mixing_weights(supernet).shape) == (12, 2)
    weight_ids = {id(v) for v in weight_variables(supernet)}
    assert not weight_ids & {id(a) for a in alphas}


@pytest.mark.parametrize("channels", [1, 3])
def test_tiny_supernet_shapes_and_round_trip(tmp_path, channels):
    model = build_supernet(channels, base_width=4, columns=(1, 2), stem_planes=4, stem_blocks=1)
    x = np.random.RandomState(0).rand(2, 16, 24, channels).astype("float32")
    y = model(x)
    assert tuple(y.shape) == (2, 16, 24, channels)
    widths = [c.widths for c in mixed_columns(model)]
    assert widths == [[4, 8], [4, 8, 16], [4, 8, 16]]
    model.save(tmp_path / "s.keras")
    again = keras.models.load_model(tmp_path / "s.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(y), atol=1e-6)


def test_residual_option_predicts_input_minus_output():
    plain = build_supernet(1, base_width=4, columns=(1,), stem_planes=4, stem_blocks=1)
    resid = build_supernet(1, base_width=4, columns=(1,), stem_planes=4, stem_blocks=1, residual=True)
    resid.set_weights(plain.get_weights())
    x = np.random.RandomState(1).rand(1, 8, 8, 1).astype("float32")
    np.testing.assert_allclose(np.asarray(resid(x)), x - np.asarray(plain(x)), atol=1e-6)


def test_size_not_multiple_of_eight_is_a_clear_error():
    model = build_supernet(1, base_width=4, columns=(1, 1, 1), stem_planes=4, stem_blocks=1)
    with pytest.raises(ValueError, match="height 12 is not a multiple of 8"):
        model(np.zeros((1, 12, 16, 1), "float32"))
