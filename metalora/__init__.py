"""metalora: meta-learned LoRA initializations for few-shot e-commerce scenarios."""
__version__ = "0.1.0"

from metalora import quiet as _quiet  # noqa: E402

_quiet.install()  # before anything imports peft (and with it bitsandbytes)

from metalora.errors import (  # noqa: E402
    BackboneError,
    ConfigError,
    DataError,
    HubError,
    MetaloraError,
    TrainingError,
)

__all__ = [
    "__version__",
    "MetaloraError",
    "ConfigError",
    "DataError",
    "BackboneError",
    "HubError",
    "TrainingError",
]
