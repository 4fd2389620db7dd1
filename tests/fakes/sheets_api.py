"""A local Google Sheets v4 + Drive v3 permissions + OAuth token endpoint, for tests (aiohttp).

Google has no Sheets emulator, so the tests run the real google-api-python-client (and the real
google-auth service-account JWT flow) against this server. It answers as Google documents, in
Google's JSON error shape (``{"error": {"code", "message", "status"}}``), and enforces what the
export must respect:

* auth: ``POST /token`` takes the JWT-bearer grant a service-account key makes, checks its RS256
  signature against the registered public key, its audience and expiry, and issues a bearer token
  with the JWT's scopes; every API call needs a live token (401 UNAUTHENTICATED) with a scope
  for that API (403 PERMISSION_DENIED), and a spreadsheet answers only its owner;
* limits: 10,000,000 cells per spreadsheet (grid cells of all tabs), 50,000 characters per cell,
  10,485,760 bytes per request (400 INVALID_ARGUMENT with Google's messages), writes inside the
  tab's grid for ``values.update`` (``exceeds grid limits``);
* quotas: read and write requests per minute per project (300) and per user (60), answered
  ``429 RESOURCE_EXHAUSTED`` (with ``Retry-After`` only when ``retry_after`` is set: Google's
  Sheets API usually sends none);
* ``batchUpdate`` is atomic: a failing request leaves the spreadsheet as it was.

Test helpers: ``fake.requests`` (every API request as ``(method, path)``), ``fake.tabs(id)``,
``fake.values(id, title)``, ``fake.permissions[id]``, ``fake.fail_next`` (statuses to answer next).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
MAX_CELLS = 10_000_000
MAX_CELL_CHARS = 50_000
MAX_REQUEST_BYTES = 10_485_760
SHEETS_SCOPES = {"https://www.googleapis.com/auth/spreadsheets", "https://www.googleapis.com/auth/drive",
                 "https://www.googleapis.com/auth/drive.file"}
DRIVE_SCOPES = {"https://www.googleapis.com/auth/drive", "https://www.googleapis.com/auth/drive.file"}
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_A1 = re.compile(r"^(?:'((?:[^']|'')+)'|([^!']+))(?:!([A-Z]+)(\d+)(?::[A-Z]+\d+)?)?$")


class ApiError(Exception):
    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.code, self.message, self.headers = code, message, headers or {}


@dataclass
class Quotas:
    """Requests per window (Google's: 300 per project and 60 per user per minute, reads and
    writes counted apart). Tests shrink the window to see a 429 without waiting a minute."""

    per_project: int = 300
    per_user: int = 60
    window: float = 60.0
    retry_after: int | None = None


@dataclass
class Sheet:
    sheet_id: int
    title: str
    rows: int = 1000
    cols: int = 26
    frozen_rows: int = 0
    cells: dict[tuple[int, int], Any] = field(default_factory=dict)

    def properties(self, index: int) -> dict[str, Any]:
        grid = {"rowCount": self.rows, "columnCount": self.cols}
        if self.frozen_rows:
            grid["frozenRowCount"] = self.frozen_rows
        return {"sheetId": self.sheet_id, "title": self.title, "index": index, "sheetType": "GRID",
                "gridProperties": grid}


@dataclass
class Spreadsheet:
    spreadsheet_id: str
    title: str
    owner: str
    sheets: list[Sheet]

    def cells(self) -> int:
        return sum(s.rows * s.cols for s in self.sheets)

    def find(self, title: str) -> Sheet:
        for sheet in self.sheets:
            if sheet.title == title:
                return sheet
        raise ApiError(400, f"Unable to parse range: {title}")


class FakeGoogle:
    """The server; ``async with FakeGoogle() as fake`` starts it on 127.0.0.1 (random port)."""

    def __init__(self, quotas: Quotas | None = None) -> None:
        self.quotas = quotas or Quotas()
        self.keys: dict[str, RSAKey] = {}  # client_email -> public key
        self.tokens: dict[str, tuple[str, set[str], float]] = {}  # token -> (email, scopes, expiry)
        self.token_lifetime = 3600
        self.spreadsheets: dict[str, Spreadsheet] = {}
        self.permissions: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.token_requests = 0
        self.answered: list[int] = []  # status of every API answer, in order
        self.fail_next: list[int] = []
        # (method, path, ordinal of this request) -> a status to answer instead, or None.
        self.fail_when: Any = None
        # async (method, path) -> None, awaited before each API request is handled: a test holds a
        # request here (the crash tests kill Maestro while its request is on the wire).
        self.before: Any = None
        self._calls: dict[tuple[str, str], deque[float]] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> FakeGoogle:
        app = web.Application(client_max_size=4 * MAX_REQUEST_BYTES, middlewares=[self._errors])
        r = app.router
        r.add_post("/token", self._token)
        r.add_post("/v4/spreadsheets", self._create)
        r.add_get("/v4/spreadsheets/{sid:[^/:]+}", self._get)
        r.add_post("/v4/spreadsheets/{sid:[^/:]+}:batchUpdate", self._batch_update)
        r.add_post("/v4/spreadsheets/{sid:[^/:]+}/values/{range:.+}:append", self._append)
        r.add_put("/v4/spreadsheets/{sid:[^/:]+}/values/{range:.+}", self._update_values)
        r.add_post("/drive/v3/files/{fid}/permissions", self._permission)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def register_key(self, client_email: str, public_pem: bytes) -> None:
        self.keys[client_email] = RSAKey.import_key(public_pem)

    # ------------------------------------------------------------------ inspection
    def tabs(self, spreadsheet_id: str) -> list[str]:
        return [s.title for s in self.spreadsheets[spreadsheet_id].sheets]

    def values(self, spreadsheet_id: str, title: str) -> list[list[Any]]:
        sheet = self.spreadsheets[spreadsheet_id].find(title)
        if not sheet.cells:
            return []
        height = max(r for r, _ in sheet.cells) + 1
        width = max(c for _, c in sheet.cells) + 1
        return [[sheet.cells.get((r, c), "") for c in range(width)] for r in range(height)]

    # ------------------------------------------------------------------ plumbing
    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        api = request.path != "/token"
        if api:
            self.requests.append((request.method, request.path))
            if self.before is not None:
                await self.before(request.method, request.path)
        try:
            response = await handler(request)
        except ApiError as exc:
            body: dict[str, Any] = {"code": exc.code, "message": exc.message, "status": _STATUS.get(exc.code, "UNKNOWN")}
            if exc.code == 429:
                body["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                    "reason": "RATE_LIMIT_EXCEEDED", "domain": "googleapis.com"}]
            response = web.json_response({"error": body}, status=exc.code, headers=exc.headers)
        if api:
            self.answered.append(response.status)
        return response

    def _caller(self, request: web.Request, scopes: set[str], kind: str) -> str:
        forced = self.fail_when(request.method, request.path, len(self.requests)) if self.fail_when else None
        if forced is None and self.fail_next:
            forced = self.fail_next.pop(0)
        if forced is not None:
            code = forced
            headers = {"Retry-After": str(self.quotas.retry_after)} if code == 429 and self.quotas.retry_after is not None else {}
            message = {429: "Quota exceeded.", 400: "Invalid request (refused by the test)."}.get(
                code, "The service is currently unavailable.")
            raise ApiError(code, message, headers)
        if (request.content_length or 0) > MAX_REQUEST_BYTES:
            raise ApiError(400, f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.")
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        found = self.tokens.get(token)
        if found is None or found[2] < time.time():
            raise ApiError(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                "token, login cookie or other valid authentication credential.")
        email, granted, _ = found
        if not granted & scopes:
            raise ApiError(403, "Request had insufficient authentication scopes.")
        self._count(email, kind)
        return email

    def _count(self, email: str, kind: str) -> None:
        now = time.monotonic()
        q = self.quotas
        for who, limit in (("project", q.per_project), (email, q.per_user)):
            calls = self._calls.setdefault((who, kind), deque())
            while calls and calls[0] <= now - q.window:
                calls.popleft()
            if len(calls) >= limit:
                label = "per minute per project" if who == "project" else "per minute per user per project"
                headers = {"Retry-After": str(q.retry_after)} if q.retry_after is not None else {}
                raise ApiError(429, f"Quota exceeded for quota metric '{kind.title()} requests' and limit "
                                    f"'{kind.title()} requests {label}' of service 'sheets.googleapis.com'.", headers)
        for who in ("project", email):
            self._calls[(who, kind)].append(now)

    def _owned(self, sid: str, email: str) -> Spreadsheet:
        book = self.spreadsheets.get(sid)
        if book is None:
            raise ApiError(404, "Requested entity was not found.")
        if book.owner != email:
            raise ApiError(403, "The caller does not have permission")
        return book

    def _body(self, book: Spreadsheet) -> dict[str, Any]:
        return {
            "spreadsheetId": book.spreadsheet_id,
            "properties": {"title": book.title, "locale": "en_US", "timeZone": "Etc/GMT"},
            "sheets": [{"properties": s.properties(i)} for i, s in enumerate(book.sheets)],
            "spreadsheetUrl": f"{self.base_url}/spreadsheets/d/{book.spreadsheet_id}/edit",
        }

    # ------------------------------------------------------------------ OAuth
    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = parse_qs(await request.text())
        def refuse(description: str) -> web.Response:
            return web.json_response({"error": "invalid_grant", "error_description": description}, status=400)
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"] or "assertion" not in form:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        assertion = form["assertion"][0]
        try:
            unverified = json.loads(_b64(assertion.split(".")[1]))
        except (ValueError, IndexError):
            return refuse("Invalid JWT: malformed.")
        key = self.keys.get(unverified.get("iss", ""))
        if key is None:
            return refuse("Invalid grant: account not found")
        try:
            claims = jwt.decode(assertion, key, algorithms=["RS256"]).claims
        except (JoseError, ValueError):
            return refuse("Invalid JWT Signature.")
        # google-auth signs for Google's token audience whatever token_uri says; Google wants it.
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return refuse("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.")
        if not (claims.get("exp", 0) > time.time() > claims.get("iat", 0) - 300):
            return refuse("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens[token] = (claims["iss"], set(str(claims.get("scope", "")).split()), time.time() + self.token_lifetime)
        return web.json_response({"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"})

    # ------------------------------------------------------------------ Sheets
    async def _create(self, request: web.Request) -> web.Response:
        email = self._caller(request, SHEETS_SCOPES, "write")
        body = await request.json()
        sid = secrets.token_urlsafe(33)[:44]
        title = (body.get("properties") or {}).get("title") or "Untitled spreadsheet"
        book = Spreadsheet(sid, title, email, [Sheet(0, "Sheet1")])
        self.spreadsheets[sid] = book
        return web.json_response(self._body(book))

    async def _get(self, request: web.Request) -> web.Response:
        email = self._caller(request, SHEETS_SCOPES, "read")
        return web.json_response(self._body(self._owned(request.match_info["sid"], email)))

    async def _batch_update(self, request: web.Request) -> web.Response:
        email = self._caller(request, SHEETS_SCOPES, "write")
        book = self._owned(request.match_info["sid"], email)
        requests = (await request.json()).get("requests") or []
        if not requests:
            raise ApiError(400, "Must specify at least one request.")
        draft = copy.deepcopy(book)  # atomic: applied to a copy, kept only if every request succeeds
        replies = [self._apply(draft, i, item) for i, item in enumerate(requests)]
        for sheet in draft.sheets:
            if sheet.frozen_rows and sheet.frozen_rows >= sheet.rows:
                raise ApiError(400, "Invalid requests: You can't freeze all visible rows on the sheet.")
        if draft.cells() > MAX_CELLS:
            raise ApiError(400, f"This action would increase the number of cells in the workbook above the limit of {MAX_CELLS} cells.")
        book.sheets = draft.sheets
        return web.json_response({"spreadsheetId": book.spreadsheet_id, "replies": replies})

    def _apply(self, book: Spreadsheet, i: int, item: dict[str, Any]) -> dict[str, Any]:
        (kind, req), = item.items()
        where = f"Invalid requests[{i}].{kind}"
        if kind == "addSheet":
            props = req.get("properties") or {}
            sheet_id = props.get("sheetId", max((s.sheet_id for s in book.sheets), default=0) + 1 + secrets.randbelow(10**6))
            title = props.get("title") or f"Sheet{len(book.sheets) + 1}"
            if any(s.title == title for s in book.sheets):
                raise ApiError(400, f'{where}: A sheet with the name "{title}" already exists. Please enter another name.')
            if any(s.sheet_id == sheet_id for s in book.sheets):
                raise ApiError(400, f"{where}: Sheet with id {sheet_id} already exists.")
            grid = props.get("gridProperties") or {}
            sheet = Sheet(sheet_id, title, grid.get("rowCount", 1000), grid.get("columnCount", 26), grid.get("frozenRowCount", 0))
            book.sheets.insert(min(props.get("index", len(book.sheets)), len(book.sheets)), sheet)
            return {"addSheet": {"properties": sheet.properties(book.sheets.index(sheet))}}
        if kind == "deleteSheet":
            sheet = self._sheet(book, req.get("sheetId"), where)
            if len(book.sheets) == 1:
                raise ApiError(400, f"{where}: You can't remove all the sheets in a document.")
            book.sheets.remove(sheet)
            return {}
        if kind == "updateSheetProperties":
            props, fields = req.get("properties") or {}, req.get("fields")
            if not fields:
                raise ApiError(400, f"{where}: At least one field must be updated, but 'fields' is empty.")
            sheet = self._sheet(book, props.get("sheetId"), where)
            grid = props.get("gridProperties") or {}
            for name in re.split(r",\s*", fields):
                if name == "index":
                    book.sheets.remove(sheet)
                    book.sheets.insert(min(props.get("index", 0), len(book.sheets)), sheet)
                elif name == "title":
                    if any(s.title == props["title"] and s is not sheet for s in book.sheets):
                        raise ApiError(400, f'{where}: A sheet with the name "{props["title"]}" already exists.')
                    sheet.title = props["title"]
                elif name == "gridProperties.rowCount":
                    sheet.rows = grid["rowCount"]
                elif name == "gridProperties.columnCount":
                    sheet.cols = grid["columnCount"]
                elif name == "gridProperties.frozenRowCount":
                    sheet.frozen_rows = grid.get("frozenRowCount", 0)
                else:
                    raise ApiError(400, f"{where}: Invalid field mask: {name}")
            sheet.cells = {k: v for k, v in sheet.cells.items() if k[0] < sheet.rows and k[1] < sheet.cols}
            return {}
        raise ApiError(400, f'Invalid JSON payload received. Unknown name "{kind}" at \'requests[{i}]\': Cannot find field.')

    @staticmethod
    def _sheet(book: Spreadsheet, sheet_id: Any, where: str) -> Sheet:
        for sheet in book.sheets:
            if sheet.sheet_id == sheet_id:
                return sheet
        raise ApiError(400, f"{where}: No sheet with id: {sheet_id}")

    async def _values_request(self, request: web.Request) -> tuple[Spreadsheet, Sheet, int, int, list[list[Any]]]:
        email = self._caller(request, SHEETS_SCOPES, "write")
        book = self._owned(request.match_info["sid"], email)
        if request.query.get("valueInputOption") not in ("RAW", "USER_ENTERED"):
            raise ApiError(400, "'valueInputOption' is required but not specified")
        a1 = request.match_info["range"]
        m = _A1.match(a1)
        if m is None:
            raise ApiError(400, f"Unable to parse range: {a1}")
        title = m.group(1).replace("''", "'") if m.group(1) else m.group(2)
        sheet = book.find(title)
        col = _column(m.group(3)) if m.group(3) else 0
        row = int(m.group(4)) - 1 if m.group(4) else 0
        values = (await request.json()).get("values") or []
        for line in values:
            for value in line:
                if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
                    raise ApiError(400, f"Your input contains more than the maximum of {MAX_CELL_CHARS} characters in a single cell.")
        return book, sheet, row, col, values

    async def _update_values(self, request: web.Request) -> web.Response:
        book, sheet, row, col, values = await self._values_request(request)
        width = max((len(v) for v in values), default=0)
        if row + len(values) > sheet.rows or col + width > sheet.cols:
            raise ApiError(400, f"Range ('{sheet.title}'!{request.match_info['range'].split('!')[-1]}) exceeds grid "
                                f"limits. Max rows: {sheet.rows}, max columns: {sheet.cols}")
        _write(sheet, row, col, values)
        return web.json_response({"spreadsheetId": book.spreadsheet_id, "updatedRange": request.match_info["range"],
                                  "updatedRows": len(values), "updatedColumns": width,
                                  "updatedCells": sum(len(v) for v in values)})

    async def _append(self, request: web.Request) -> web.Response:
        book, sheet, _, col, values = await self._values_request(request)
        start = max((r for r, _ in sheet.cells), default=-1) + 1
        width = max((len(v) for v in values), default=0)
        grow_rows, grow_cols = max(0, start + len(values) - sheet.rows), max(0, col + width - sheet.cols)
        if book.cells() + grow_rows * max(sheet.cols, col + width) + grow_cols * sheet.rows > MAX_CELLS:
            raise ApiError(400, f"This action would increase the number of cells in the workbook above the limit of {MAX_CELLS} cells.")
        sheet.rows += grow_rows
        sheet.cols += grow_cols
        _write(sheet, start, col, values)
        return web.json_response({"spreadsheetId": book.spreadsheet_id, "updates": {
            "updatedRows": len(values), "updatedCells": sum(len(v) for v in values)}})

    # ------------------------------------------------------------------ Drive
    async def _permission(self, request: web.Request) -> web.Response:
        email = self._caller(request, DRIVE_SCOPES, "write")
        fid = request.match_info["fid"]
        book = self.spreadsheets.get(fid)
        if book is None or book.owner != email:
            raise ApiError(404, f"File not found: {fid}.")
        body = await request.json()
        if body.get("role") not in ("reader", "commenter", "writer") or body.get("type") not in ("user", "group", "domain", "anyone"):
            raise ApiError(400, "Invalid permission type or role.")
        if body["type"] == "domain" and not body.get("domain"):
            raise ApiError(400, "The domain field is required for a permission of type domain.")
        permission = {"kind": "drive#permission", "id": secrets.token_hex(8), **body}
        self.permissions.setdefault(fid, []).append(permission)
        return web.json_response(permission)


def _write(sheet: Sheet, row: int, col: int, values: list[list[Any]]) -> None:
    for r, line in enumerate(values):
        for c, value in enumerate(line):
            if value == "" or value is None:
                sheet.cells.pop((row + r, col + c), None)  # an empty string clears the cell
            else:
                sheet.cells[(row + r, col + c)] = value


def _column(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
