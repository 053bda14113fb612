"""Errors raised by crystalforge library code.

Every error a user can cause (bad input, unknown names, unreadable files) is a
:class:`CrystalforgeError` subclass whose message is one line saying what is wrong and,
where possible, what to do. The CLI shows these as one line with exit code 1.
"""

from __future__ import annotations


class CrystalforgeError(Exception):
    """Base class of every error crystalforge raises on purpose."""


class PluginError(CrystalforgeError):
    """A plugin failed to load or register, or two plugins registered the same name."""


class UnknownComponentError(CrystalforgeError, KeyError):
    """A component name (scorer, search strategy, ...) is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class OptionError(CrystalforgeError, ValueError):
    """A component option is unknown or its value has the wrong type."""


class CIFError(CrystalforgeError, ValueError):
    """A CIF could not be read, parsed or processed."""


class CompositionError(CrystalforgeError, ValueError):
    """A composition is malformed or names an unknown element."""


class SpaceGroupError(CrystalforgeError, ValueError):
    """A space-group symbol is not one of the known 230 groups."""


class TokenizerError(CrystalforgeError, ValueError):
    """Token ids or vocabulary do not fit the tokenizer."""


class CheckpointError(CrystalforgeError):
    """A checkpoint is missing, unreadable, or does not fit the tokenizer."""


class DataError(CrystalforgeError):
    """A dataset file or folder is missing or malformed."""


class ConfigError(CrystalforgeError, ValueError):
    """A configuration key is unknown or its value is invalid."""


class ScorerError(CrystalforgeError):
    """A scorer could not be reached or failed."""


class DownloadError(CrystalforgeError):
    """A download failed or its checksum did not match."""


class SequenceTooLongError(CrystalforgeError, ValueError):
    """A token sequence would not fit the model's context (block size) or the KV cache."""
