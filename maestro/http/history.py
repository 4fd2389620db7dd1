"""The history API: the log itself, read-only, paginated by position. The base of audit queries."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.errors import NotFound
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import VERSION_MAX, parse_query

MAX_PAGE = 1000


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: int = Field(0, ge=0, description="return events with a position above this one")
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    type: list[str] = Field(default_factory=list, description="event type names (repeat or comma-separate)")


class StreamQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after_version: int = Field(0, ge=0, le=VERSION_MAX)
    limit: int = Field(100, ge=1, le=MAX_PAGE)


class StreamsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: str | None = None
    after: str = Field("", description="return streams whose id sorts after this one")
    limit: int = Field(100, ge=1, le=MAX_PAGE)


async def list_events(request: web.Request) -> web.Response:
    q = parse_query(EventsQuery, request, multi=("type",))
    store = request.app[RUNTIME].store
    events = await store.read_all_raw(q.after, q.limit, q.type or None)
    return web.json_response(
        {
            "events": [e.to_dict() for e in events],
            "next_after": events[-1].position if len(events) == q.limit else None,
        }
    )


async def get_stream(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    q = parse_query(StreamQuery, request)
    store = request.app[RUNTIME].store
    version = await store.stream_version(stream_id)
    if version is None:
        raise NotFound(f"no stream {stream_id!r}")
    events = await store.read_raw_stream(stream_id, q.after_version, q.limit)
    return web.json_response(
        {
            "stream_id": stream_id,
            "version": version,
            "events": [e.to_dict() for e in events],
            "next_after_version": events[-1].version if len(events) == q.limit else None,
        }
    )


async def list_streams(request: web.Request) -> web.Response:
    q = parse_query(StreamsQuery, request)
    rows = await request.app[RUNTIME].pool.fetch(
        "SELECT stream_id, category, version, first_position, last_position, last_type, "
        "created_at, updated_at FROM proj_streams "
        "WHERE ($1::text IS NULL OR category = $1) AND stream_id > $2 ORDER BY stream_id LIMIT $3",
        q.category,
        q.after,
        q.limit,
    )
    streams = [
        {**dict(r), "created_at": r["created_at"].isoformat(), "updated_at": r["updated_at"].isoformat()}
        for r in rows
    ]
    return web.json_response(
        {"streams": streams, "next_after": streams[-1]["stream_id"] if len(streams) == q.limit else None}
    )


ROUTES = routes(
    Route("GET", "/api/v1/events", list_events, "The log in position order, with metadata", query=EventsQuery, rule="admin", tag="history"),
    Route("GET", "/api/v1/streams", list_streams, "Streams at a glance", query=StreamsQuery, rule="admin", tag="history"),
    Route("GET", "/api/v1/streams/{stream_id}", get_stream, "One stream's events", query=StreamQuery, rule="admin", tag="history"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
