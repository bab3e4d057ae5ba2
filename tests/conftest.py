"""Shared fixtures: real images from ../shared/datasets (or the bundled samples)."""

import importlib
import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests check results, not speed: XLA's optimisation passes were about 40 % of the time of the
# JAX subprocess tests on 2 CPU cores (a two-process training test: 81 s -> 47 s without them).
# Set JAX_DISABLE_MOST_OPTIMIZATIONS=0 to test the optimised programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "datasets"
SAMPLES = REPO_ROOT / "data" / "samples"
# Shared folder -> the bundled copy of (a subset of) its files, used when ../shared is absent.
_FALLBACK = {
    "Set12": SAMPLES / "set12",
    "BSDS500/train": SAMPLES / "bsds" / "train",
    "BSDS500/val": SAMPLES / "bsds" / "val",
    "Rain100L-sample": SAMPLES / "rain100l",
}


def _dataset(relative: str) -> pathlib.Path:
    shared = SHARED_DATA / relative
    if shared.is_dir():
        return shared
    if _FALLBACK[relative].is_dir():
        return _FALLBACK[relative]
    pytest.skip(f"real test images missing: neither {shared} nor {_FALLBACK[relative]} exists")


@pytest.fixture(scope="session")
def set12_dir():
    return _dataset("Set12")


@pytest.fixture(scope="session")
def bsds_train_dir():
    return _dataset("BSDS500/train")


@pytest.fixture(scope="session")
def bsds_val_dir():
    return _dataset("BSDS500/val")


@pytest.fixture(scope="session")
def rain_dir():
    """Folder with `rainy/` and `clean/` (Rain100L sample pairs)."""
    return _dataset("Rain100L-sample")


@pytest.fixture
def run_cli(capsys):
    """`run_cli("train", argv)`: runs `train_scripts/train.py`'s `main(argv)`, which must exit
    (argparse error); returns (exit code, last line of stderr)."""

    def run(script, argv):
        sys.path.insert(0, str(REPO_ROOT / "train_scripts"))
        try:
            module = importlib.import_module(script)
        finally:
            sys.path.pop(0)
        with pytest.raises(SystemExit) as exit_info:
            module.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        return exit_info.value.code, err[-1] if err else ""

    return run
