"""Learning-rate schedules beyond Keras' own (registered, so saved models load anywhere)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="clearer_tf")
class Rewarmup(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule(step)`, ramped linearly from 0 over `rewarmup` steps after `start`.

    lr(step) = schedule(step) * min(1, (step - start) / rewarmup) for step >= start: a training
    warm-started at iteration `start` of `schedule` from weights alone (fresh optimizer moments)
    re-enters the schedule gently instead of jumping to its value there.

    Example:
    >>> cosine = keras.optimizers.schedules.CosineDecay(0.01, 100_000)
    >>> lr = Rewarmup(cosine, start=40_000, rewarmup=500)
    >>> float(lr(40_250)) == 0.5 * float(cosine(40_250))
    True
    """

    def __init__(self, schedule, start, rewarmup):
        self.schedule, self.start, self.rewarmup = schedule, int(start), int(rewarmup)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        ramp = 1.0 if self.rewarmup <= 0 else ops.clip((step - self.start) / self.rewarmup, 0.0, 1.0)
        return self.schedule(step) * ramp

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "start": self.start,
                "rewarmup": self.rewarmup}

    @classmethod
    def from_config(cls, config):
        config = dict(config, schedule=keras.saving.deserialize_keras_object(config["schedule"]))
        return cls(**config)
