"""
The printed tables of the firehose benchmark. bench/README.rst explains each column.
"""

from __future__ import annotations

from typing import Any

TITLES = {"hermod": "hermod", "builtin": "built-in", "reference": "reference"}


def title(target: str) -> str:
    """
    The column title of C{target}; C{hermod:K} is Hermod with K component connections,
    C{hermod:K+mc} the same writing through the server's multicast service.
    """
    if target.startswith("hermod:"):
        count, plus, _ = target.split(":", 1)[1].partition("+")
        return f"hermod {count}c" + ("+mc" if plus else "")
    return TITLES[target]


def orderedTargets(results: list[dict[str, Any]]) -> list[str]:
    """
    The targets present, Hermod's (by connection count) first, then built-in and reference.
    """
    present = {r["target"] for r in results}
    hermods = sorted(
        (t for t in present if t.startswith("hermod")),
        key=lambda t: (int(t.split(":", 1)[1].partition("+")[0]), t) if ":" in t else (1, t),
    )
    return hermods + [t for t in ("builtin", "reference") if t in present]

Group = tuple[str, list[tuple[str, int]]]


def _num(value: float | None, digits: int = 0) -> str:
    """
    C{value} with thousands separators, or C{-} if missing.
    """
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    """
    C{a / b} as C{1.23x}, or C{-} if either is missing or zero.
    """
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def _mark(result: dict[str, Any] | None) -> str:
    """
    C{*} after the figures of a scenario that did not complete normally.
    """
    return "" if result is None or result["status"] == "ok" else "*"


def printTable(title: str, groups: list[Group], rows: list[list[list[str]]]) -> None:
    """
    Print a table whose columns are grouped under group titles.

    @param groups: Per group, its title and its columns (header, width).
    @param rows: Per row, per group, the cells.
    """
    widths = [max(sum(w + 1 for _, w in cols) - 1, len(name)) for name, cols in groups]
    print()
    print(title)
    print(" | ".join(name.center(width) for (name, _), width in zip(groups, widths)))
    print(" | ".join(
        " ".join(h.rjust(w) for h, w in cols).rjust(width)
        for (_, cols), width in zip(groups, widths)
    ))
    print("-+-".join("-" * width for width in widths))
    for row in rows:
        print(" | ".join(
            " ".join(c.rjust(w) for c, (_, w) in zip(cells, cols)).rjust(width)
            for cells, (_, cols), width in zip(row, groups, widths)
        ))


def printServerTables(report: dict[str, Any], meta: dict[str, Any]) -> None:
    """
    Print the four tables of one server: throughput with ratios, latency and delivery,
    resources, and the bench client's share of the machine; then the notes.
    """
    results = report["results"]
    targets = orderedTargets(results)
    scenarios: list[tuple[int, int, int]] = []
    for r in results:
        key = (r["subscribers"], r["window"], r["items"])
        if key not in scenarios:
            scenarios.append(key)
    byKey = {(r["subscribers"], r["window"], r["items"], r["target"]): r for r in results}

    def get(key: tuple[int, int, int], target: str) -> dict[str, Any] | None:
        return byKey.get((*key, target))

    print()
    print("=" * 100)
    print(
        f"{report.get('version', report['server'])}: one node, N subscribers, M items of "
        f"{meta['entryBytes']} bytes, W publishes outstanding; Hermod on SQLite; "
        f"{meta['cpus']} CPUs shared by everything"
    )
    print("=" * 100)
    scenarioGroup: Group = ("scenario", [("N", 5), ("W", 3), ("M", 5)])

    def scenarioCells(key: tuple[int, int, int]) -> list[str]:
        return [str(key[0]), str(key[1]), str(key[2])]

    # 1. Throughput and ratios.
    groups: list[Group] = [scenarioGroup]
    groups += [(title(t), [("pub/s", 9), ("notif/s", 9)]) for t in targets]
    ratios = [(a, b) for b in ("builtin", "reference") for a in targets
              if a.startswith("hermod") and b in targets]
    groups += [(f"{title(a)}/{title(b)}", [("pub", 6), ("notif", 6)]) for a, b in ratios]
    rows = []
    for key in scenarios:
        row = [scenarioCells(key)]
        for t in targets:
            r = get(key, t)
            row.append([
                _num(r.get("pubPerSecond") if r else None) + _mark(r),
                _num(r.get("notifPerSecond") if r else None) + _mark(r),
            ])
        for a, b in ratios:
            ra, rb = get(key, a), get(key, b)
            row.append([
                _ratio(ra and ra.get("pubPerSecond"), rb and rb.get("pubPerSecond")),
                _ratio(ra and ra.get("notifPerSecond"), rb and rb.get("notifPerSecond")),
            ])
        rows.append(row)
    printTable(
        "Throughput: publishes answered per s; notifications delivered per s (all subscribers)",
        groups, rows,
    )

    # 2. Latency and delivery check.
    groups = [scenarioGroup]
    groups += [(title(t), [("p50", 7), ("p95", 7), ("p99", 7), ("lost", 6), ("dup", 4)])
               for t in targets]
    rows = []
    for key in scenarios:
        row = [scenarioCells(key)]
        for t in targets:
            r = get(key, t)
            lat = (r or {}).get("latencyMs", {})
            row.append([
                _num(lat.get("p50"), 1), _num(lat.get("p95"), 1), _num(lat.get("p99"), 1),
                _num(r.get("lost") if r else None) + _mark(r),
                _num(r.get("duplicates") if r else None),
            ])
        rows.append(row)
    printTable(
        "Latency, ms, publish sent -> notification received (per item per subscriber); "
        "notifications lost / duplicated",
        groups, rows,
    )

    # 3. Resources.
    groups = [scenarioGroup]
    for t in targets:
        cols = [("srvCPU", 7), ("srvRSS", 7)]
        if t != "builtin":
            cols = [("CPU s", 6), ("us/ntf", 7), ("RSS MB", 7)] + cols
        groups.append((title(t), cols))
    rows = []
    for key in scenarios:
        row = [scenarioCells(key)]
        for t in targets:
            r = get(key, t) or {}
            cells = [_num(r.get("serverCPU"), 2), _num(r.get("serverRSS"), 1)]
            if t != "builtin":
                cells = [
                    _num(r.get("componentCPU"), 2), _num(r.get("componentMicrosPerNotification"), 1),
                    _num(r.get("componentRSS"), 1),
                ] + cells
            row.append(cells)
        rows.append(row)
    printTable(
        "Resources in the measured phase: component (Hermod / reference) CPU s, CPU us per "
        "notification, peak RSS MB; server CPU s, peak RSS MB",
        groups, rows,
    )

    # 4. The bench client and the machine.
    groups = [scenarioGroup]
    groups += [(title(t), [("wall s", 6), ("cli CPU", 7), ("cli %", 5), ("busy %", 6),
                            ("other", 6)])
               for t in targets]
    rows = []
    for key in scenarios:
        row = [scenarioCells(key)]
        for t in targets:
            r = get(key, t) or {}
            row.append([
                _num(r.get("wallSeconds"), 1), _num(r.get("clientCPU"), 2),
                _num(r["clientShare"] * 100) if "clientShare" in r else "-",
                _num(r["machineBusy"] * 100) if "machineBusy" in r else "-",
                _num(r.get("otherCPU"), 2),
            ])
        rows.append(row)
    printTable(
        "Bench client and machine in the measured phase: wall s, client CPU s (publisher + "
        "subscriber processes), client % and busy % of all cores, other = CPU s of unrelated "
        "processes",
        groups, rows,
    )

    notes = [r for r in results if r["status"] != "ok" or r["notes"]]
    if notes:
        print()
        print("Notes (* = scenario did not complete normally):")
        for r in notes:
            print(
                f"  N={r['subscribers']} W={r['window']} {title(r['target'])}: {r['status']}: "
                + " | ".join(r["notes"])
            )
