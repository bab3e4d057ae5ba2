"""JAX's persistent compilation cache, on by default with the JAX backend.

The first call of each JAX step program compiles (and, on a GPU, autotunes) for
minutes; with the cache a second run on the same machine reuses the compiled
programs. The folder, first match wins:

1. `folder` passed to `enable` (the CLIs' `--compile-cache DIR`);
2. JAX's own `JAX_COMPILATION_CACHE_DIR` (or `jax_compilation_cache_dir` set in code);
3. `CLEARER_JAX_CACHE` (`off` turns the cache off);
4. `$XDG_CACHE_HOME/clearer-tf/jax`, by default `~/.cache/clearer-tf/jax`.

With the cache on, JAX also keeps XLA's per-fusion GPU autotune results in its
`xla_gpu_per_fusion_autotune_cache_dir` subfolder. Nothing happens on TensorFlow.
"""

import os

ENV = "CLEARER_JAX_CACHE"
OFF = ("", "0", "off", "none", "false")


def default_folder():
    """`$XDG_CACHE_HOME/clearer-tf/jax` (`~/.cache/clearer-tf/jax` without XDG_CACHE_HOME)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "clearer-tf", "jax")


def enable(folder=None, enabled=True):
    """Turn on JAX's persistent compilation cache for this process (JAX backend only).

    Call it before the first compilation. Args: `folder` overrides the environment;
    `enabled=False` turns the cache off. Returns the folder in use, or None (off, or
    not JAX).

    Example:
    >>> enable()  # ~/.cache/clearer-tf/jax with KERAS_BACKEND=jax
    """
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    if not enabled:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if folder is None:
        folder = jax.config.jax_compilation_cache_dir
    if folder is None:
        env = os.environ.get(ENV)
        if env is not None and env.strip().lower() in OFF:
            jax.config.update("jax_enable_compilation_cache", False)
            return None
        folder = env or default_folder()
    folder = os.path.abspath(os.path.expanduser(folder))
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder
