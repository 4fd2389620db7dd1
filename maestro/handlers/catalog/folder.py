"""The catalog as a folder of SQL files: reading ``DIR/<dataset>/<name>.sql`` and writing it back.

The folder layout is ``DIR/<dataset>/<name>.sql``: the file's path names the table, its body is
the query. Settings (any :class:`TableSpec` field but ``query``, by its JSON name, so ``import``
for import settings) go in an optional YAML header — the file's first line is ``/*---``, the
header ends at the first line that is ``---*/`` — or in a sidecar ``<name>.yaml``, never both::

    /*---
    description: Revenue per country and day
    labels: {team: growth}
    ---*/
    SELECT day, country, SUM(amount) AS revenue FROM shop.orders GROUP BY 1, 2

The header is a comment, so the file is still plain BigQuery SQL. ``dataset`` and ``name`` may be
repeated in the settings but must agree with the path. Import and external tables have no SQL:
they are a sidecar ``<name>.yaml`` alone. Hidden entries (``.git``) and files at the top of DIR
(a README) are ignored; anything else in a dataset folder is an error.

**Canonical query.** A query is compared, stored and exported in one form: line endings are
``\\n``, leading blank lines and trailing whitespace are dropped (:func:`canonical_query`),
nothing else; exported files end with one newline. ``export`` followed by ``apply`` changes
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from maestro.catalog.sql import analyze
from maestro.errors import Conflict, SqlSyntaxError, ValidationFailed
from maestro.events.catalog import TableSpec
from maestro.handlers.catalog.service import validate_spec

HEADER_OPEN = "/*---"
HEADER_CLOSE = "---*/"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t\f\v]*\n)+")


# ---------------------------------------------------------------------------------- problems
@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one file, compiler-style: ``path:line:column: message``."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = "".join(f":{n}" for n in (self.line, self.column) if n is not None)
        return f"{self.path}{where}: {self.message}"


class FolderInvalid(ValidationFailed):
    """The folder does not describe a valid catalog; nothing was applied."""

    code = "folder_invalid"

    def __init__(self, root: Path | str, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.path, p.line or 0, p.column or 0))
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__(
            f"{count} in {root}; nothing was applied",
            problems=[
                {"path": p.path, "line": p.line, "column": p.column, "message": p.message}
                for p in self.problems
            ],
        )


# ---------------------------------------------------------------------------------- reading
def canonical_query(query: str) -> str:
    r"""The one form a query is compared, stored and exported in.

    >>> canonical_query("\r\n  \nSELECT 1\r\nFROM t  \n\n")
    'SELECT 1\nFROM t'
    """
    query = query.replace("\r\n", "\n").replace("\r", "\n")
    return _LEADING_BLANK_LINES.sub("", query, count=1).rstrip()


def _opens_header(text: str) -> bool:
    return text.split("\n", 1)[0].rstrip() == HEADER_OPEN


def split_header(text: str, path: str = "<sql>") -> tuple[str | None, str, int]:
    """(YAML header or None, body, 1-based file line where the body starts).

    >>> split_header("/*---\\nlabels: {a: b}\\n---*/\\nSELECT 1\\n")
    ('labels: {a: b}\\n', 'SELECT 1\\n', 4)
    """
    if not _opens_header(text):
        return None, text, 1
    lines = text.split("\n")
    for number, line in enumerate(lines[1:], start=2):
        if line.rstrip() == HEADER_CLOSE:
            header = "".join(f"{x}\n" for x in lines[1 : number - 1])
            return header, "\n".join(lines[number:]), number + 1
    raise _Bad(path, f"the header opened by {HEADER_OPEN} on line 1 has no {HEADER_CLOSE} line", 1, 1)


class _Bad(Exception):
    """Problems found while reading one table's files."""

    def __init__(self, path: Path | str, message: str, line: int | None = None, column: int | None = None) -> None:
        self.problems = [Problem(str(path), message, line, column)]
        super().__init__(str(self.problems[0]))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # universal newlines: CRLF reads as LF
    except OSError as exc:
        raise _Bad(path, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _Bad(path, "not UTF-8 text") from None


def _load_yaml(text: str, path: Path, first_line: int) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + first_line if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise _Bad(path, f"invalid YAML: {reason}", line, column) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _Bad(path, "the settings must be a YAML mapping of field: value", first_line)
    return data


def _key_line(text: str, key: str, first_line: int) -> int | None:
    """The file line where the top-level YAML key ``key`` is set, for error messages."""
    for number, line in enumerate(text.split("\n")):
        if re.match(rf"{re.escape(key)}\s*:", line):
            return number + first_line
    return None


def _read_table(
    dataset: str, name: str, sql_path: Path | None, yaml_path: Path | None,
    default_project: str | None = None,
) -> TableSpec:
    """The spec of one table from its ``.sql`` and/or ``.yaml`` file. Raises _Bad."""
    query, body_line = None, 1
    settings_text, settings_path, settings_line = "", sql_path or yaml_path, 1
    if sql_path is not None:
        header, body, body_line = split_header(_read_text(sql_path), str(sql_path))
        if header is not None:
            if yaml_path is not None:
                raise _Bad(sql_path, f"settings are both in this header and in {yaml_path.name}: keep one", 1, 1)
            settings_text, settings_line = header, 2
        query = canonical_query(body)
        blank = _LEADING_BLANK_LINES.match(body)  # dropped by canonical_query
        body_line += blank.group().count("\n") if blank else 0
    if yaml_path is not None:
        settings_text, settings_path, settings_line = _read_text(yaml_path), yaml_path, 1
    assert settings_path is not None
    settings = _load_yaml(settings_text, settings_path, settings_line)
    if "query" in settings:
        line = _key_line(settings_text, "query", settings_line)
        raise _Bad(settings_path, f"'query' is not a setting: the SQL is the body of {name}.sql", line)
    for key, value in (("dataset", dataset), ("name", name)):
        if key in settings and settings[key] != value:
            line = _key_line(settings_text, key, settings_line)
            raise _Bad(settings_path, f"{key} is {settings[key]!r} here but {value!r} by the path", line)
    payload = {**settings, "dataset": dataset, "name": name}
    if query is not None:
        payload["query"] = query
    elif payload.get("kind", "summary") == "summary":
        raise _Bad(settings_path, f"a summary table needs its SQL in {name}.sql (or kind: import or external)")
    try:
        spec = validate_spec(payload)
    except ValidationFailed as exc:
        bad = _Bad(settings_path, exc.message)
        bad.problems = [
            Problem(
                str(settings_path),
                f"{p['field']}: {p['message']}" if p["field"] != "(body)" else p["message"],
                _key_line(settings_text, p["field"].split(".")[0], settings_line),
            )
            for p in exc.details.get("problems", [])
        ] or bad.problems
        raise bad from None
    if spec.kind == "summary":
        try:
            analyze(spec.query, default_project=default_project, legacy_sql=spec.legacy_sql)
        except SqlSyntaxError as exc:
            line = exc.line + body_line - 1 if exc.line is not None else None
            message = re.sub(r" \(line \d+, column \d+\)$", "", exc.message)
            raise _Bad(str(sql_path), message, line, exc.column) from None
    return spec


def read_folder(path: Path | str, *, default_project: str | None = None) -> list[TableSpec]:
    """Every table the folder describes, sorted by (dataset, name). Raises FolderInvalid.

    ``default_project`` only matters for the SQL check: pass the catalog's, so that the parsed
    statements are the ones the catalog's analysis cache will be asked for next.
    """
    root = Path(path)
    if not root.is_dir():
        raise FolderInvalid(root, [Problem(str(root), "not a directory")])
    problems: list[Problem] = []
    specs: list[TableSpec] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        tables: dict[str, dict[str, Path]] = {}
        for file in sorted(folder.iterdir()):
            if file.name.startswith("."):
                continue
            if file.is_dir():
                problems.append(Problem(str(file), "dataset folders hold no sub-folders"))
            elif file.suffix == ".yml":
                problems.append(Problem(str(file), "sidecar files end in .yaml"))
            elif file.suffix not in (".sql", ".yaml"):
                problems.append(Problem(str(file), "not a table file: <name>.sql or <name>.yaml"))
            else:
                tables.setdefault(file.stem, {})[file.suffix] = file
        for name, files in sorted(tables.items()):
            try:
                specs.append(_read_table(
                    folder.name, name, files.get(".sql"), files.get(".yaml"), default_project
                ))
            except _Bad as bad:
                problems.extend(bad.problems)
    if problems:
        raise FolderInvalid(root, problems)
    return specs


# ---------------------------------------------------------------------------------- export
class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so a long description reads as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
_DEFAULTS = TableSpec.model_construct(dataset="d", name="n").to_payload()


def settings_of(spec: TableSpec) -> dict[str, Any]:
    """The fields of ``spec`` a header or sidecar holds: every non-default one but the path's."""
    payload = spec.to_payload()
    return {
        k: v for k, v in payload.items()
        if k not in ("dataset", "name", "query") and v != _DEFAULTS[k]
    }


def _dump(settings: dict[str, Any]) -> str:
    if not settings:
        return ""
    return yaml.dump(settings, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def render(spec: TableSpec) -> dict[str, str]:
    """The files of one table: ``{file name: content}``, deterministic."""
    settings = _dump(settings_of(spec))
    if spec.kind != "summary":
        return {f"{spec.name}.yaml": settings or "{}\n"}
    query = canonical_query(spec.query) + "\n"
    if "*/" in settings:  # would end the header comment early in BigQuery: use a sidecar
        return {f"{spec.name}.sql": query, f"{spec.name}.yaml": settings}
    if settings or _opens_header(query):  # an empty header keeps such a query from being one
        return {f"{spec.name}.sql": f"{HEADER_OPEN}\n{settings}{HEADER_CLOSE}\n{query}"}
    return {f"{spec.name}.sql": query}


@dataclass
class ExportResult:
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"exported: {len(self.written)} files written, {self.unchanged} unchanged, "
            f"{len(self.removed)} stale removed"
        )


EXPORT_MARKER = ".maestro-export"
_MARKER_TEXT = (
    "Written by `maestro export`: the next export into this folder removes the table files\n"
    "(<dataset>/*.sql, <dataset>/*.yaml) of tables that are not in the catalog.\n"
)


class ExportRefused(Conflict):
    """The export's target is not a folder an export may write into; nothing was changed."""

    code = "export_refused"


def check_export_target(root: Path) -> None:
    """Refuse a folder that is neither new, empty, nor a previous export's.

    An export mirrors the catalog, so it deletes the table files of tables the catalog lacks:
    pointed at the wrong folder (a home directory, another project) it would delete every
    ``*.sql`` and ``*.yaml`` one level down. Its marker file says a folder is an export's.
    Hidden entries alone (a fresh ``git init``) count as empty: an export deletes nothing there.
    """
    if not root.exists():
        return
    if not root.is_dir():
        raise ExportRefused(f"{root} is not a directory")
    if (root / EXPORT_MARKER).is_file():
        return
    visible = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    if visible:
        shown = ", ".join(visible[:3]) + (", ..." if len(visible) > 3 else "")
        raise ExportRefused(
            f"{root} is not empty ({shown}) and is not a previous export (it has no {EXPORT_MARKER} file): "
            "export into a new or empty directory; nothing was changed"
        )


def export(tables: Iterable[TableSpec | Mapping[str, Any]], path: Path | str) -> ExportResult:
    """Write ``tables`` (specs, spec payloads, or catalog rows — deleted rows skipped) to ``path``
    in the layout :func:`read_folder` reads. The folder then mirrors them: table files
    (``<dataset>/*.sql|yaml``) of other tables are removed, other files are left alone, and a file
    whose content is already right is not rewritten. ``path`` must be new, empty, or a previous
    export (:data:`EXPORT_MARKER`); anything else is refused before a file is touched.
    """
    root = Path(path)
    check_export_target(root)
    wanted: dict[Path, str] = {}
    for item in tables:
        if isinstance(item, Mapping) and "table_id" in item:
            if item.get("deleted"):
                continue
            item = row_spec(item)
        spec = item if isinstance(item, TableSpec) else TableSpec.model_validate(dict(item))
        for file_name, content in render(spec).items():
            wanted[root / spec.dataset / file_name] = content
    result = ExportResult()
    root.mkdir(parents=True, exist_ok=True)
    marker = root / EXPORT_MARKER
    if not marker.is_file() or marker.read_text(encoding="utf-8", errors="replace") != _MARKER_TEXT:
        marker.write_text(_MARKER_TEXT, encoding="utf-8", newline="\n")
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(folder.iterdir()):
            if file.is_file() and file.suffix in (".sql", ".yaml") and file not in wanted:
                file.unlink()
                result.removed.append(str(file))
    for file, content in sorted(wanted.items()):
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            if file.read_text(encoding="utf-8") == content:
                result.unchanged += 1
                continue
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        file.write_text(content, encoding="utf-8", newline="\n")
        result.written.append(str(file))
    return result


def row_spec(row: Mapping[str, Any]) -> dict[str, Any]:
    spec = row["spec"]
    return orjson.loads(spec) if isinstance(spec, (str, bytes)) else dict(spec)
