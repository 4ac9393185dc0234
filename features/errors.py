"""The one base of every error raised for a user to fix, and how such errors name settings.

A message names a setting with ``setting("horizon_days")``: Python callers read
``horizon_days`` (the keyword they pass), the ``churn`` command reads ``--horizon-days``
(``ChurnError.for_command_line``). So no error below the command speaks of flags.
"""

from __future__ import annotations

import re

_MARK = "\x1f"
_SETTING = re.compile(f"{_MARK}([a-z0-9_]+){_MARK}")


def setting(name: str) -> str:
    """``name`` marked as a setting in an error message."""
    return f"{_MARK}{name}{_MARK}"


class ChurnError(Exception):
    """A problem with the data, the store, a model or a setting that the user can fix; the
    message says what is wrong and, where it helps, what to do."""

    def __str__(self) -> str:
        return _SETTING.sub(r"\1", super().__str__())

    def for_command_line(self) -> str:
        """The message with each setting named as the command's flag."""
        return _SETTING.sub(lambda m: "--" + m.group(1).replace("_", "-"), super().__str__())
