"""One base for the dataclass configs: ``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json``.

``from_dict`` refuses unknown keys with an error that names them (a typo never silently falls back
to a default); missing keys take their defaults. A field that was renamed keeps loading from
older files: the subclass maps the old name to the new one in ``RENAMED``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Self


class ConfigBase:
    """Mixin for ``@dataclass`` configs."""

    RENAMED: ClassVar[dict[str, str]] = {}
    """Old field name → current field name, for files written before a rename."""
    HELP: ClassVar[str] = ""
    """Appended to the unknown-fields error: where the valid fields are listed."""

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with renamed fields under their current names."""
        out = dict(data)
        for old, new in cls.RENAMED.items():
            if old in out:
                if new in out:
                    raise ValueError(f"{cls.__name__} got both {old!r} and its new name {new!r}")
                out[new] = out.pop(old)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build a config from ``to_dict`` output (or an older one, see ``RENAMED``); unknown
        keys are an error, missing ones default."""
        data = cls.upgrade(data)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}{cls.HELP}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, source: str | Path) -> Self:
        """From a JSON file path or a JSON string."""
        text = source.read_text() if isinstance(source, Path) else source
        return cls.from_dict(json.loads(text))
