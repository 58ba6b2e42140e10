"""Wire types the JSON schemas share: the domain's words as the API spells them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, WithJsonSchema

from server.domain.model import Level


def _level(value: Any) -> Level:
    if isinstance(value, Level):
        return value
    if isinstance(value, str):
        return Level.parse(value)
    raise ValueError("an assurance level is one of low, substantial, high")


# An assurance level on the wire: its label ("low", "substantial", "high"), never its rank.
LevelLabel = Annotated[
    Level,
    PlainValidator(_level),
    PlainSerializer(lambda level: level.label, return_type=str),
    WithJsonSchema({"type": "string", "enum": [level.label for level in Level], "title": "Level"}),
]


class StrictModel(BaseModel):
    """A request body that refuses members it does not know (a typo is an error, not ignored)."""

    model_config = ConfigDict(extra="forbid")
