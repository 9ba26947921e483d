"""Version ids: UTC time to the second plus random hex, so ids sort by age and never collide."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

VERSION_PATTERN = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")


def new_version_id(now: datetime | None = None) -> str:
    """A fresh id such as 20261129T030818Z-48dce8 (also used for retrain job ids)."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def is_version(value: object) -> bool:
    """Tell ids from anything else, so user input never becomes an arbitrary path."""
    return isinstance(value, str) and VERSION_PATTERN.fullmatch(value) is not None


new_id = new_version_id  # the name service/jobs.py imports today; one release, then remove
