"""clearer-tf: Keras 3 / TensorFlow implementation of CLEARER (NeurIPS 2020)."""
from setuptools import find_packages, setup

setup(
    name="clearer-tf",
    version="0.1.0",
    description="CLEARER multi-scale neural architecture search for image restoration, in Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["clearer_tf", "clearer_tf.*", "pipelines", "pipelines.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.12",
        "numpy",
        "pillow",
        "matplotlib",  # architecture picture and alpha-trajectory plot
        "tqdm",
        "tensorboard",  # viewing the logs our long jobs write (tf.summary itself is in TF)
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
        # pytest-xdist: two workers for the 2-core CI (see README, Tests); scikit-image: only as
        # an independent reference in tests; jax: the TF-vs-JAX parity
        # test; ai-edge-litert: the TFLite parity tests (tf.lite.Interpreter is deprecated).
        "test": ["pytest", "pytest-xdist", "scikit-image", "jax", "ai-edge-litert"],
        "tflite": ["ai-edge-litert"],
    },
)
