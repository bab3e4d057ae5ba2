"""Shipped models: list them and load one as a Keras model for `model.fit` or prediction.

A shipped model is a folder `saved_models/<name>/` (written by `clearer_tf.shipping.ship`):

* `<version>/` the TF Serving SavedModel; its variables are the only copy of the weights;
* `genotype.json` the architecture;
* `card.json` the model card as data (task, data, iterations, wall time, device, metrics);
* `README.md` the same card for people.

`load_pretrained(name)` rebuilds the network from the genotype and reads the weights from
the SavedModel's variable collection `clearer_weights` (TensorFlow's checkpoint reader,
so it works under every Keras backend).

Models are looked up in `root`, else `$CLEARER_MODELS`, else the repository's
`saved_models/`.
"""

from __future__ import annotations

import json
import os

from clearer_tf.export import WEIGHTS_COLLECTION
from clearer_tf.genotype import Genotype
from clearer_tf.tiling import DEFAULT_OVERLAP

ROOT_ENV = "CLEARER_MODELS"
CARD_FILE = "card.json"
GENOTYPE_FILE = "genotype.json"
REPO_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models")


def models_root(root=None) -> str:
    """The folder that holds the shipped models (see the module docstring)."""
    return os.fspath(root or os.environ.get(ROOT_ENV) or REPO_MODELS)


def list_pretrained(root=None) -> list:
    """Names of the shipped models (folders with a `card.json`), sorted."""
    root = models_root(root)
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, CARD_FILE)))


def check_name(name, what="model name"):
    """ValueError unless `name` is a plain folder name (no path: models live in the root)."""
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or os.sep in name:
        raise ValueError(f"{what} must be a plain folder name such as 'denoise-gray-sigma50-interim' "
                         f"(see list_pretrained()), got {name!r}")


def model_dir(name, root=None) -> str:
    """`<root>/<name>`; ValueError naming the known models if there is no such model."""
    check_name(name)
    folder = os.path.join(models_root(root), name)
    if not os.path.isfile(os.path.join(folder, CARD_FILE)):
        known = ", ".join(list_pretrained(root)) or "none"
        raise ValueError(f"no shipped model {name!r} in {models_root(root)} (known: {known})")
    return folder


def model_card(name, root=None) -> dict:
    """The model's `card.json` as a dict."""
    with open(os.path.join(model_dir(name, root), CARD_FILE), encoding="utf-8") as f:
        return json.load(f)


def saved_model_version(folder, version=None) -> str:
    """The SavedModel folder `<folder>/<version>` (default: the highest version)."""
    versions = sorted(int(d) for d in os.listdir(folder)
                      if d.isdigit() and os.path.isfile(os.path.join(folder, d, "saved_model.pb")))
    if not versions:
        raise ValueError(f"{folder}: no SavedModel version folder (<n>/saved_model.pb)")
    if version is None:
        version = versions[-1]
    if int(version) not in versions:
        raise ValueError(f"{folder}: no version {version} (have {', '.join(map(str, versions))})")
    return os.path.join(folder, str(int(version)))


def _collection_keys(reader, saved_model_dir):
    """Checkpoint keys of the `clearer_weights` collection, in order, from the object graph.

    A variable reachable by several paths is stored once, under one of them, so the keys
    are looked up instead of spelled `clearer_weights/<i>/...`.
    """
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    ids = [c.node_id for c in graph.nodes[0].children if c.local_name == WEIGHTS_COLLECTION]
    if not ids:
        raise ValueError(f"{saved_model_dir}: exported without the {WEIGHTS_COLLECTION} collection")
    members = {c.local_name: c.node_id for c in graph.nodes[ids[0]].children}
    keys = []
    for i in range(len(members)):
        attributes = [a.checkpoint_key for a in graph.nodes[members[str(i)]].attributes
                      if a.name == "VARIABLE_VALUE"]
        keys.append(attributes[0])
    return keys


def load_saved_model_weights(model, saved_model_dir):
    """Assigns the `clearer_weights` collection of an exported SavedModel to `model.weights`.

    Names (the variable paths stored at export) and shapes must match one for one;
    ValueError naming the SavedModel otherwise.
    """
    import tensorflow as tf

    record = os.path.join(saved_model_dir, "assets.extra", "clearer.json")
    try:
        with open(record, encoding="utf-8") as f:
            paths = json.load(f).get(WEIGHTS_COLLECTION)
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{record}: unreadable export metadata ({type(e).__name__})") from None
    if paths is None:
        raise ValueError(f"{saved_model_dir}: exported without the {WEIGHTS_COLLECTION} collection")
    weights = model.weights
    if [v.path for v in weights] != paths:
        raise ValueError(
            f"{saved_model_dir}: its {len(paths)} weights do not match the {len(weights)} weights "
            "of the network built from its genotype"
        )
    reader = tf.train.load_checkpoint(os.path.join(saved_model_dir, "variables", "variables"))
    keys = _collection_keys(reader, saved_model_dir)
    if len(keys) != len(weights):
        raise ValueError(f"{saved_model_dir}: its {WEIGHTS_COLLECTION} collection has {len(keys)} "
                         f"variables, clearer.json lists {len(weights)}")
    for i, variable in enumerate(weights):
        value = reader.get_tensor(keys[i])
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{saved_model_dir}: {paths[i]} has shape {value.shape}, the network needs "
                f"{tuple(variable.shape)}"
            )
        variable.assign(value)


def load_pretrained(name, version=None, root=None, with_padding=False, tile="auto",
                    tile_overlap=DEFAULT_OVERLAP):
    """A shipped model as a Keras model with its trained weights.

    Args:
        name: a folder of `saved_models/` (see `list_pretrained()`).
        version: SavedModel version (default: the highest).
        root: where to look (default: `$CLEARER_MODELS`, else the repository's `saved_models/`).
        with_padding: wrap it (`network.with_padding`) so any image size is accepted;
            the plain network needs sizes that are multiples of 2**cells (fine for training
            patches).
        tile, tile_overlap: with `with_padding`, `model.predict` checks its input
            (`clearer_tf.inputs`) and restores large images in overlapping tiles
            (`clearer_tf.tiling`; "auto": 512x512 tiles above 1 megapixel, 0: never).

    Example:
    >>> model = load_pretrained("denoise-gray-sigma50-interim")
    >>> model.compile(keras.optimizers.Adam(1e-4), "mse")
    >>> model.fit(my_noisy_clean_pairs, epochs=1)
    """
    from clearer_tf import network

    folder = model_dir(name, root)
    model = network.build_network(Genotype.load(os.path.join(folder, GENOTYPE_FILE)), name=name)
    load_saved_model_weights(model, saved_model_version(folder, version))
    if not with_padding:
        return model
    return tiled_predict(network.with_padding(model), tile, tile_overlap)


def tiled_predict(model, tile="auto", overlap=DEFAULT_OVERLAP):
    """`model` whose `predict(x)` checks `x` and restores it tile by tile above the tile size
    (other `predict` arguments are passed on per tile)."""
    from clearer_tf.evaluation import guarded

    whole = model.predict

    def predict(x, *args, **kwargs):
        kwargs.setdefault("verbose", 0)
        return guarded(lambda images: whole(images, *args, **kwargs), model.input_shape[-1],
                       tile, overlap)(x)

    model.predict = predict
    return model
