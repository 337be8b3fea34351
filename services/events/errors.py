"""Several validation errors raised at once from one validator, each at its own place (a model
validator's checks across fields would otherwise all land on the whole object)."""

from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

Located = tuple[tuple[str | int, ...], str, str, Any]  # (place, error type, message, the value found)


def errors_at(title: str, errors: list[Located]) -> ValidationError:
    """A ValidationError of `errors`, their places relative to the model or field being validated."""
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)
        for loc, kind, message, value in errors])


__all__ = ["Located", "errors_at"]
