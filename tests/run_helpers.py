"""A search or a training in a subprocess that a test can kill with SIGKILL at a chosen moment.

    python tests/run_helpers.py search OUT [--die-in-backup K] [--die-at I] [--resume]
    python tests/run_helpers.py train OUT [--die-in-backup K] [--die-at I]
    python tests/run_helpers.py search|train OUT --multihost I N PORT   # process I of N (JAX)

`--die-in-backup K`: during the K-th backup write, half of the new file is written, then the
process kills itself (SIGKILL: no Python clean-up runs). `--die-at I`: SIGKILL before iteration
I (0-based) starts. Without them the run finishes; the final weights of every variable go to
OUT/final.weights.h5 (search) or are in last.weights.h5 (training).
"""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "data", "samples")


def search_configs():
    from clearer_tf.presets import SearchConfig, SupernetConfig

    return (SupernetConfig(base_width=4, columns=(2,), stem_planes=4, stem_blocks=1, image_channels=1),
            SearchConfig(iterations=8, warmup=2, batch_size=2, patch_size=16, log_every=2, checkpoint_every=2,
                         jit_compile=False, seed=5, data_pipeline=PIPELINE))


def train_config():
    from clearer_tf.presets import TrainConfig

    return TrainConfig(iterations=30, batch_size=2, patch_size=16, validate_every=5, jit_compile=False, seed=3,
                       data_pipeline=PIPELINE)


TINY_GENOTYPE = "F / P / F"
PIPELINE = os.environ.get("RUN_HELPERS_PIPELINE", "auto")


def die_in_backup(k):
    """Patches `files.save_weights` to die half-way through the k-th backup write."""
    from clearer_tf import files

    original, count = files.save_weights, [0]

    def save_weights(model, path):
        if os.sep + "backup" + os.sep not in os.fspath(path):
            return original(model, path)
        count[0] += 1
        if count[0] < k:
            return original(model, path)
        with files.atomic_path(path, ".weights.h5") as tmp:
            model.save_weights(tmp)
            with open(tmp, "r+b") as f:
                f.truncate(os.path.getsize(tmp) // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    files.save_weights = save_weights


class DieAt:
    """SIGKILL before global iteration `iteration` (in `on_train_batch_begin`, which Keras calls
    synchronously); creates the callback lazily so this module imports without Keras."""

    def __new__(cls, iteration):
        import keras

        class _DieAt(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_begin(self, batch, logs=None):
                if self.epoch * self.params["steps"] + batch == iteration:
                    os.kill(os.getpid(), signal.SIGKILL)

        return _DieAt()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["search", "train"])
    p.add_argument("out")
    p.add_argument("--die-in-backup", type=int)
    p.add_argument("--die-at", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--multihost", nargs=3, type=int, metavar=("I", "N", "PORT"))
    args = p.parse_args()
    if args.multihost:
        from clearer_tf import distribute

        i, n, port = args.multihost
        distribute.setup("multihost", f"127.0.0.1:{port}", n, i)
    from pipelines.tasks import load_eval_items, load_task_data

    if args.die_in_backup:
        die_in_backup(args.die_in_backup)
    callbacks = [DieAt(args.die_at)] if args.die_at is not None else []
    if args.kind == "search":
        from clearer_tf.search import run_search

        supernet_config, search_config = search_configs()
        data = load_task_data("denoise", data=os.path.join(SAMPLES, "set12"), sigma=25.0)
        result = run_search(supernet_config, search_config, data, args.out, resume=args.resume, callbacks=callbacks,
                            verbose=0)
        from clearer_tf.callbacks import is_first_process, save_weights

        save_weights(result.search, os.path.join(args.out, "final.weights.h5"), is_first_process())
    else:
        from clearer_tf.genotype import Genotype
        from clearer_tf.training import train_network

        genotype = Genotype.from_string(TINY_GENOTYPE, base_width=4, stem_planes=4, stem_blocks=1)
        folder = os.path.join(SAMPLES, "bsds", "train")
        data = load_task_data("denoise", weights_data=folder, arch_data=folder, sigma=50.0)
        val = load_eval_items("denoise", os.path.join(SAMPLES, "set12"), 1)[:1]
        train_network(genotype, data, train_config(), args.out, val_items=val, verbose=0, callbacks=callbacks)
    print("done")


if __name__ == "__main__":
    main()
