"""Block Kit pieces and links into Maestro, shared by every Slack message (pure, no I/O).

Slack's limits are enforced here, once: a ``section`` text holds at most 3,000 characters, a
``header`` 150, a message 50 blocks (docs.slack.dev/reference/block-kit/blocks). Text from
outside (a BigQuery error, a table name) is escaped, since ``&``, ``<`` and ``>`` are control
characters in Slack's mrkdwn and an error quoting ``<@here>`` must not page a channel.

>>> escape("a < b & <!here>")
'a &lt; b &amp; &lt;!here&gt;'
>>> Links("https://maestro.example/").link("tables", "t1", "ds.orders")
'<https://maestro.example/tables/t1|ds.orders>'
>>> Links(None).link("tables", "t1", "ds.orders")
'ds.orders'
>>> error_position("Syntax error: Unexpected keyword FROM at [3:15]")
(3, 15)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

Block = dict[str, Any]
SECTION_MAX = 3000
HEADER_MAX = 150
BLOCKS_MAX = 50
_POSITION = re.compile(r"\[(\d+):(\d+)\]")


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_position(message: str) -> tuple[int, int] | None:
    """(line, column) of a BigQuery error message's ``[line:column]``, if it has one."""
    found = _POSITION.search(message)
    return (int(found.group(1)), int(found.group(2))) if found else None


@dataclass(frozen=True, slots=True)
class Links:
    """Links into this Maestro (``url_prefix`` of the Slack settings); without one, plain names."""

    prefix: str | None

    def url(self, page: str, ident: str | None = None, query: str = "") -> str | None:
        if not self.prefix:
            return None
        path = f"{page}/{quote(ident, safe='')}" if ident else page
        return f"{self.prefix.rstrip('/')}/{path}{'?' + query if query else ''}"

    def link(self, page: str, ident: str | None, label: str, query: str = "") -> str:
        url = self.url(page, ident, query)
        return f"<{url}|{escape(label)}>" if url else escape(label)


def header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, HEADER_MAX), "emoji": True}}


def section(mrkdwn: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(mrkdwn, SECTION_MAX)}}


def fields(pairs: list[tuple[str, str]]) -> Block:
    """A section of two-column fields (Slack allows 10, of 2,000 characters each)."""
    return {"type": "section", "fields": [
        {"type": "mrkdwn", "text": clip(f"*{escape(k)}*\n{v}", 2000)} for k, v in pairs[:10]
    ]}


def context(mrkdwn: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(mrkdwn, SECTION_MAX)}]}


def code(text: str, limit: int = 1200) -> str:
    """A preformatted quote of outside text (a BigQuery error)."""
    return f"```{escape(clip(text, limit)).replace('```', '` ` `')}```"


def message(blocks: list[Block]) -> list[Block]:
    """At most Slack's 50 blocks: the overflow is said, never silently cut."""
    if len(blocks) <= BLOCKS_MAX:
        return blocks
    return [*blocks[: BLOCKS_MAX - 1], context(f"… and {len(blocks) - BLOCKS_MAX + 1} more (see Maestro)")]
