"""Reading the small JSON files metalora keeps beside weights (metadata, configs, checkpoint state).

One reader, so that a missing, cut-off or wrong-shaped file is always one line that names the file and
says what to do, whichever module reads it; callers choose the error type and the fix.
"""
from __future__ import annotations

import json
from pathlib import Path

from metalora.errors import DataError


def read_object(path: Path, fix: str = "", missing: str = "", error: type[Exception] = DataError) -> dict:
    """The JSON object in `path`. `missing` replaces the generic fix when the file does not exist."""
    tail = f"; {fix}" if fix else ""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} is missing{'; ' + missing if missing else tail}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc}){tail}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: must hold a JSON object{tail}")
    return data
