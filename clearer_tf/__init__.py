"""clearer-tf: CLEARER multi-scale architecture search for image restoration (Keras 3)."""
