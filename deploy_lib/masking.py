"""Keep secrets out of everything we print.

A value is secret when it came from ``.secrets.toml``, from a secret-marked env-file
key, or sits under a key whose name looks like a secret (token, key, password, secret).
``Masker`` holds the raw secret strings of a run and replaces them with ``****`` in
text and in nested data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "****"
_SECRET_NAME = re.compile(r"(token|key|password|passwd|secret|credential)", re.IGNORECASE)
# Names that contain "key" but hold no secret.
_NOT_SECRET = frozenset({"keys", "key_path", "keyword", "monkey"})


def is_secret_name(name: str) -> bool:
    """True for a key name such as ``api_key``, ``GIT_TOKEN`` or ``db_password``."""
    last = name.rsplit(".", 1)[-1].lower()
    return last not in _NOT_SECRET and bool(_SECRET_NAME.search(last))


class Masker:
    """Replaces every known secret value with ``****``; add values as they become known."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        # Very short values would mask ordinary words; they are still masked by key name.
        self._values.update(str(v) for v in values if v is not None and len(str(v)) >= 4)

    @property
    def values(self) -> frozenset[str]:
        return frozenset(self._values)

    def text(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text

    def data(self, data: Any, secret_keys: Iterable[str] = (), _prefix: str = "") -> Any:
        """A copy of ``data`` with secret values (by value, by key name, or by dotted
        key listed in ``secret_keys``) replaced by ``****``."""
        keys = frozenset(secret_keys)
        if isinstance(data, Mapping):
            out = {}
            for k, v in data.items():
                dotted = f"{_prefix}.{k}" if _prefix else str(k)
                if (dotted in keys or is_secret_name(str(k))) and not isinstance(v, Mapping) and v not in ("", None):
                    out[k] = MASK
                else:
                    out[k] = self.data(v, keys, dotted)
            return out
        if isinstance(data, (list, tuple)):
            return [self.data(v, keys, _prefix) for v in data]
        if isinstance(data, str):
            return self.text(data)
        return data
