"""Tables, ratios and the fan-out plot for bench/run.py results."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RELAYCORE_PEERS = ("relaycore-asyncio", "relaycore-trio")
BASELINE_PEERS = ("websockets", "picows")
#: The relay as an ASGI app and the hand-written Starlette relay, both under uvicorn.
ASGI_PAIR = ("relaycore-uvicorn", "starlette-uvicorn")
BUSY_LOAD = 0.9  # load generator CPU share above which a figure may be load-bound
RELAY_SATURATED = 0.97  # relay CPU share at which the relay itself is the limit
NOISY = 0.15  # CPU share other processes took on the two cores: figure is noisy

Steps = dict[str, dict[str, Any]]  # step key -> load.py result


@dataclass(frozen=True)
class Row:
    """One table row: a label and how to read its figure from a peer's steps."""

    label: str
    get: Callable[[Steps], Any]
    window: Callable[[Steps], dict[str, Any] | None] = lambda steps: None  # CPU readings
    #: For a descriptive row: how to show the value; such rows get no ratios.
    text: Callable[[Any], str] | None = None


@dataclass(frozen=True)
class Table:
    title: str
    unit: str
    higher_is_better: bool
    rows: list[Row]


def _dig(steps: Steps, key: str, *path: str) -> Any:
    node: Any = steps.get(key)
    if not node or not node.get("ok"):
        return None
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _getter(key: str, *path: str) -> Callable[[Steps], Any]:
    return lambda steps: _dig(steps, key, *path)


def _received(step: dict[str, Any]) -> str:
    low, high, sent = step["min_received"], step["max_received"], step["sent"]
    return f"{low:,}-{high:,}/{sent:,}" if low != high else f"{low:,}/{sent:,}"


def _stalled_member(member: dict[str, Any]) -> str:
    if not member.get("dropped"):
        return "kept"
    code = member.get("close_code")
    return f"dropped {member['dropped_after_s']:.1f}s" + (f" ({code})" if code else "")


def stalled_rows() -> list[Row]:
    def field(show: Callable[[Any], str]) -> Callable[[Steps], str | None]:
        def get(steps: Steps) -> str | None:
            step = _dig(steps, "stalled")
            return None if step is None else show(step)

        return get

    def same(value: Any) -> str:
        return str(value)

    return [
        Row("deliveries/s", _getter("stalled", "rate"), lambda s: _dig(s, "stalled", "window")),
        Row("from 1st message", _getter("stalled", "rate_from_start")),
        Row("complete", field(lambda st: "yes" if st["complete"] else "NO"), text=same),
        Row("received/sent", field(_received), text=same),
        Row("acknowledged", field(lambda st: f"{st['acked']:,}"), text=same),
        Row("longest gap", field(lambda st: f"{st['longest_gap_s']:.2f}s"), text=same),
        Row("stalled", field(lambda st: "STALLED" if st["stalled"] else "no"), text=same),
        Row("stalled member", field(lambda st: _stalled_member(st["stalled_receiver"])), text=same),
    ]


def build_tables(fanout_ns: list[int], latency_n: int, stalled_n: int = 1000) -> list[Table]:
    def fan(mode: str, n: int) -> Row:
        key = f"fanout-{n}"
        return Row(f"N={n}", lambda s: _dig(s, key, mode, "rate"), lambda s: _dig(s, key, mode))

    return [
        Table("fan-out, bursty (64 in flight)", "deliveries/s", True, [fan("bursty", n) for n in fanout_ns]),
        Table("fan-out, paced (1 in flight)", "deliveries/s", True, [fan("paced", n) for n in fanout_ns]),
        Table(
            f"stalled member: bursty fan-out to N={stalled_n} live receivers, one more member never reads",
            "deliveries/s to the live ones",
            True,
            stalled_rows(),
        ),
        Table(
            f"latency, N={latency_n} at 100 msg/s",
            "ms",
            False,
            [
                Row(q, _getter("latency", f"{q}_ms"), lambda s: _dig(s, "latency", "window"))
                for q in ("p50", "p99", "max")
            ],
        ),
        Table(
            "many channels (2-member channels, all chatting)",
            "messages/s",
            True,
            [Row("delivered", _getter("channels", "rate"), lambda s: _dig(s, "channels"))],
        ),
        Table(
            "connection rate (handshake + self-join)",
            "connections/s",
            True,
            [Row("opened", _getter("connrate", "rate"), lambda s: _dig(s, "connrate"))],
        ),
        Table(
            "memory per idle connection (server RSS)",
            "bytes",
            False,
            [Row("per connection", _getter("memory", "bytes_per_conn"))],
        ),
    ]


def ratio_pairs(peers: list[str]) -> list[tuple[str, str]]:
    pairs = [(r, b) for r in RELAYCORE_PEERS if r in peers for b in BASELINE_PEERS if b in peers]
    if all(p in peers for p in ASGI_PAIR):
        pairs.append(ASGI_PAIR)
    return pairs


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _short(peer: str) -> str:
    return peer.removeprefix("relaycore-")


def render(tables: list[Table], results: dict[str, Steps], peers: list[str]) -> tuple[str, dict[str, Any]]:
    """Text tables plus a JSON-ready {table: {row: {figures, ratios}}} summary."""
    pairs = ratio_pairs(peers)
    lines: list[str] = []
    summary: dict[str, Any] = {}
    for table in tables:
        if all(row.get(results.get(p, {})) is None for row in table.rows for p in peers):
            continue  # scenario not run (or failed everywhere)
        better = "higher" if table.higher_is_better else "lower"
        lines.append(f"\n== {table.title} [{table.unit}, {better} is better] ==")
        header = ["", *peers, *(f"{_short(r)}/{b}" for r, b in pairs)]
        body: list[list[str]] = []
        notes: list[str] = []
        seen: set[int] = set()
        summary[table.title] = {}
        for row in table.rows:
            figures = {p: row.get(results.get(p, {})) for p in peers}
            if row.text is not None:
                show = row.text
                body.append([row.label, *("-" if figures[p] is None else show(figures[p]) for p in peers)])
                body[-1] += [""] * len(pairs)
                summary[table.title][row.label] = {"figures": figures}
                continue
            ratios: dict[str, float | None] = {}
            for r, b in pairs:
                fr, fb = figures[r], figures[b]
                ratios[f"{r}/{b}"] = fr / fb if fr is not None and fb else None
            cells = [row.label, *(_fmt(figures[p]) for p in peers)]
            cells += [("x" + _fmt(ratios[f"{r}/{b}"])) if ratios[f"{r}/{b}"] else "-" for r, b in pairs]
            body.append(cells)
            summary[table.title][row.label] = {"unit": table.unit, "figures": figures, "ratios": ratios}
            for p in peers:
                win = row.window(results.get(p, {})) or {}
                if id(win) in seen:
                    continue  # rows sharing one measured window get one note
                seen.add(id(win))
                busy, other = win.get("load_cpu"), win.get("interference")
                relay = win.get("server_cpu")
                if busy is not None and busy > BUSY_LOAD:
                    if relay is not None and relay >= RELAY_SATURATED:
                        # Both cores full: the relay could not have gone faster either.
                        notes.append(f"{p} {row.label}: relay at {relay:.0%}, load generator at {busy:.0%}")
                    else:
                        notes.append(f"{p} {row.label}: load generator at {busy:.0%} of its core (may be load-bound)")
                if other is not None and other > NOISY:
                    notes.append(f"{p} {row.label}: other processes took {other:.0%} of a core (noisy)")
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        for cells in [header, *body]:
            lines.append(
                "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False)))
            )
        lines.extend(f"  note: {n}" for n in notes)
    if all(p in peers for p in ASGI_PAIR):
        lines.extend(_asgi_headline(tables, summary))
    return "\n".join(lines), summary


def _asgi_headline(tables: list[Table], summary: dict[str, Any]) -> list[str]:
    """The two ratios the ASGI comparison is about, in one line (and in the summary)."""
    key = "/".join(ASGI_PAIR)
    labels = [row.label for row in tables[0].rows]  # the bursty fan-out sizes
    label = "N=1000" if "N=1000" in labels or not labels else labels[-1]
    wanted = {f"bursty fan-out {label}": (tables[0].title, label)}
    stalled = next((t.title for t in tables if t.title.startswith("stalled member")), None)
    if stalled is not None:
        # From the first message: the measured window of a relay stalled since the
        # warm-up holds no delivery and so no ratio.
        wanted["stalled"] = (stalled, "from 1st message")
    found: dict[str, float | None] = {}
    for name, (title, label) in wanted.items():
        entry = summary.get(title, {}).get(label)
        if entry is not None:
            found[name] = entry["ratios"].get(key)
    if not found:
        return []
    summary["asgi"] = {key: found}
    parts = []
    for name, value in found.items():
        if value:
            parts.append(f"{name} x{_fmt(value)}")
        else:  # a relay that delivered nothing in the window has no ratio
            parts.append(f"{name} -")
    if stalled is not None and stalled in summary:
        complete = summary[stalled].get("complete", {}).get("figures", {})
        if all(complete.get(p) is not None for p in ASGI_PAIR):
            parts[-1] += " (complete: " + ", ".join(f"{p} {complete[p]}" for p in ASGI_PAIR) + ")"
    return [f"\n{key}: " + ", ".join(parts)]


def plot_fanout(results: dict[str, Steps], peers: list[str], fanout_ns: list[int], path: Path) -> str | None:
    """Write the deliveries/s-vs-N plot; returns an error string instead of raising."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib unavailable ({exc}); no plot written"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=False)
    for ax, mode in zip(axes, ("bursty", "paced"), strict=False):
        for peer in peers:
            points = [(n, _dig(results.get(peer, {}), f"fanout-{n}", mode, "rate")) for n in fanout_ns]
            xs = [n for n, v in points if v is not None]
            ys = [v for _, v in points if v is not None]
            if xs:
                ax.plot(xs, ys, marker="o", label=peer)
        ax.set_ylim(bottom=0)
        ax.set_xscale("log")
        ax.set_xticks(fanout_ns, [str(n) for n in fanout_ns])
        ax.set_xlabel("receivers on the channel (N)")
        ax.set_ylabel("deliveries per second")
        ax.set_title(f"fan-out, {mode}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
