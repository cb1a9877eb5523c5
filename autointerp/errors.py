"""The errors autointerp raises for bad input: each says what is wrong and how to fix it."""


class AutointerpError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(AutointerpError):
    """The configuration, a model declaration or AUTOINTERP_HOME is unusable."""


class InputError(AutointerpError):
    """A request (layers, corpus, excerpt length, a table) cannot be served as asked."""
