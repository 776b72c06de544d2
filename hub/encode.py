"""The hub's JSON answers, checked against their response model and encoded off the event loop, item by item.

A merged answer holds every host's items: 300 timelines of 200 events from three hosts, 100,000 flow edges. FastAPI
checks what an `async` route returns against its response model on the event loop: ~0.6 to 0.9 s of it for such an
answer, every other request waiting. Here the answer is checked and encoded on a worker thread, each item of its
lists by itself: pydantic holds the interpreter lock for the whole of one call, so one call per item keeps each hold
to an item's (milliseconds) and the event loop runs between them. The bytes are those FastAPI would send (the same
model, fields and order; compact JSON), so the response model still documents the route.
"""

from __future__ import annotations

import functools
from typing import Any, get_args, get_origin

from fastapi.responses import Response
from pydantic import BaseModel

from hub.threads import off_loop


@functools.cache
def item_lists(model: type[BaseModel]) -> tuple[tuple[str, type[BaseModel]], ...]:
    """The fields of `model` that are lists of models: (name, item model)."""
    out = []
    for name, info in model.model_fields.items():
        args = get_args(info.annotation)
        if get_origin(info.annotation) is list and args and isinstance(args[0], type) \
                and issubclass(args[0], BaseModel):
            out.append((name, args[0]))
    return tuple(out)


def encoded(model: type[BaseModel], content: dict[str, Any]) -> bytes:
    """`content` as `model` encodes it, each item of its lists of models checked and encoded by itself (raises
    pydantic's ValidationError as the response model's check did: a 500, the hub's own mistake)."""
    lists = [(name, item, content.get(name)) for name, item in item_lists(model)]
    lists = [(name, item, items) for name, item, items in lists if isinstance(items, list) and items]
    if not lists:
        return model.__pydantic_serializer__.to_json(model.model_validate(content))
    head = model.__pydantic_serializer__.to_json(model.model_validate({**content, **{n: [] for n, _, _ in lists}}))
    ends = []
    for name, item, items in lists:
        marker = b'"' + name.encode() + b'":[]'
        if head.count(marker) != 1:  # (a key's own text cannot hold it: its quotes would be escaped)
            return model.__pydantic_serializer__.to_json(model.model_validate(content))
        ends.append((head.index(marker) + len(marker) - 1, item, items))  # where its `]` is
    out, at = [], 0
    for end, item, items in sorted(ends, key=lambda e: e[0]):
        dump = item.__pydantic_serializer__.to_json
        out += [head[at:end], b",".join(dump(item.model_validate(x)) for x in items)]
        at = end
    out.append(head[at:])
    return b"".join(out)


async def json_answer(model: type[BaseModel], content: dict[str, Any], status_code: int = 200) -> Response:
    """The route's answer, checked and encoded on one of the hub's work threads (`encoded`, hub.threads)."""
    body = await off_loop(encoded, model, content)
    return Response(body, status_code=status_code, media_type="application/json")
