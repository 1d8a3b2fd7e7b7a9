"""docs/operator/configuration-reference.md is generated from the settings models and must be current;
every key the daemon accepts is in it, with a meaning."""

from __future__ import annotations

from pydantic import BaseModel

from provider.config import Config
from provider.config_reference import reference
from tests.conftest import REPO


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _keys(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_the_reference_is_current() -> None:
    doc = (REPO / "docs" / "operator" / "configuration-reference.md").read_text()
    assert doc == reference(), (
        "regenerate: python -m provider.config_reference > docs/operator/configuration-reference.md"
    )


def test_every_key_is_listed_with_a_meaning() -> None:
    rows = {line.split("|")[1].strip(" `"): line for line in reference().splitlines() if line.startswith("| `")}
    keys = _keys(Config)
    assert set(rows) == set(keys)
    for key in keys:
        assert rows[key].rstrip(" |").rsplit("|", 1)[1].strip(), f"{key} has no meaning: add a comment beside it"
