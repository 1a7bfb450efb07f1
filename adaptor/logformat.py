"""Log formatters for ``LOG_FORMAT=text|json`` (installed by ``__main__`` only).

Both escape control characters in the message and in string extras
(:func:`runtime.logsafe.escape_controls`), so a pod name or an annotation value holding
``\n`` cannot start a forged log line, whichever module logs it.
"""

from __future__ import annotations

import json
import logging
import time

from runtime.logsafe import escape_controls

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """Go std-log style: ``2006/01/02 15:04:05 [adaptor.manager] message``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        text = f"{stamp} [{record.name}] {level}{escape_controls(record.getMessage())}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, extras, and exc when present."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": escape_controls(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                if not isinstance(value, int | float | bool):
                    value = escape_controls(value if isinstance(value, str) else str(value))
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)
