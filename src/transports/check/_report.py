"""The report: a table for people (one row per check, then each failure's frames) or JSON."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ._registry import Result, Settings

__all__ = ["format_json", "format_table"]


def _counts(results: Sequence[Result]) -> dict[str, int]:
    return {status: sum(r.status == status for r in results) for status in ("PASS", "FAIL", "SKIP")}


def format_table(results: Sequence[Result], *, width: int = 100) -> str:
    """The report: one row per check, a summary line, then each failure's frames."""
    name_width = max([len("CHECK"), *(len(r.name) for r in results)])
    lines = [f"{'CHECK':<{name_width}}  RESULT  DETAIL"]
    for r in results:
        detail = r.detail if len(r.detail) <= width else r.detail[: width - 3] + "..."
        lines.append(f"{r.name:<{name_width}}  {r.status:<6}  {detail}")
    counts = _counts(results)
    seconds = sum(r.seconds for r in results)
    lines.append(
        f"\n{len(results)} checks: {counts['PASS']} passed, {counts['FAIL']} failed, "
        f"{counts['SKIP']} skipped in {seconds:.1f} s"
    )
    for r in results:
        if r.status == "FAIL":
            lines += ["", f"FAIL {r.name}: {r.detail}", "  frames seen (A > sent, A < received):"]
            lines += [f"    {line}" for line in r.frames] or ["    (none)"]
    return "\n".join(lines)


def format_json(results: Sequence[Result], settings: Settings) -> str:
    """The report as one JSON document: ``ok``, the counts, and every result."""
    counts = _counts(results)
    document = {
        "url": settings.url,
        "ok": counts["FAIL"] == 0,
        "passed": counts["PASS"],
        "failed": counts["FAIL"],
        "skipped": counts["SKIP"],
        "seconds": round(sum(r.seconds for r in results), 3),
        "results": results,
    }
    return msgspec.json.encode(document).decode()
