"""The one exception type for bad input data or arguments."""


class DataError(ValueError):
    """Bad data or data argument; the message is one line naming the file or argument."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
