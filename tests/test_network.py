"""Discrete networks from genotypes: counts, arbitrary sizes, errors naming the field."""

import json
import re

import keras
import numpy as np
import pytest

from clearer_tf import build_network
from clearer_tf.genotype import Genotype, GenotypeError
from clearer_tf.network import with_padding

TINY = dict(base_width=4, stem_planes=4, stem_blocks=1)


def count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("P P P P / P P P P / P P P P", 8_723_264),
        ("F F F F / F F F F / F F F F", 4_361_536),
        ("F P P F / F F F F / P F F P", 6_073_536),
    ],
)
def test_parameter_counts_match_authors(text, expected):
    assert count(build_network(Genotype.from_string(text))) == expected


def test_json_path_and_dict_build_the_same_network(tmp_path):
    g = Genotype.from_string("F P / P F / F F", **TINY)
    path = tmp_path / "genotype.json"
    g.save(path)
    from_path, from_dict = build_network(str(path)), build_network(json.loads(path.read_text()))
    assert [l.__class__.__name__ for l in from_path.layers] == [
        l.__class__.__name__ for l in from_dict.layers
    ]
    assert count(from_path) == count(from_dict)


def test_any_size_inference_keeps_bsd_shape(tmp_path):
    model = with_padding(build_network(Genotype.from_string("F P / P F / F F", **TINY)))
    x = np.random.RandomState(0).rand(1, 321, 481, 1).astype("float32")
    y = model(x)
    assert tuple(y.shape) == (1, 321, 481, 1)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(y), atol=1e-6)


def test_padding_is_reflect_and_crop_restores_extent():
    """An identity network inside `with_padding` must return the input exactly."""
    inp = keras.Input((None, None, 1))
    identity = keras.Model(inp, inp)
    wrapped = with_padding(identity, multiple=8)
    x = np.random.RandomState(2).rand(1, 13, 22, 1).astype("float32")
    np.testing.assert_array_equal(np.asarray(wrapped(x)), x)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["cells"][0].__setitem__(0, "conv"), "cells[0][0]"),
        (lambda d: d.__setitem__("image_channels", 2), "image_channels"),
        (lambda d: d.__setitem__("format_version", 99), "format_version"),
        (lambda d: d.__setitem__("columns", [4, 4, 4]), "columns"),
        (lambda d: d.__setitem__("widths", [8, 16]), "widths"),
        (lambda d: d.__setitem__("weights", [[[0.5, 0.5]]]), "weights"),
        (lambda d: d.__setitem__("cells", []), "cells"),
    ],
)
def test_invalid_genotype_names_the_field(mutate, field):
    data = Genotype.from_string("F P / P F / F F", **TINY).to_dict()
    mutate(data)
    with pytest.raises(GenotypeError, match=re.escape(f"'{field}'")):
        build_network(data)


def test_genotype_string_round_trip(tmp_path):
    g = Genotype.from_string("F P P F / F F F F / P F F P")
    assert g.short() == "F P P F / F F F F / P F F P"
    g.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json").cells == g.cells
    with pytest.raises(GenotypeError, match="not found"):
        Genotype.load(tmp_path / "missing.json")
