"""A provider's public report as a PDF to send to a provost: pure functions from the public
report's dict (built by :mod:`afhub.services.facility_api.contributions` from the SQL
aggregates) to matplotlib figures, and from those to the PDF's bytes. No server, no
database; nothing is fetched (matplotlib's own DejaVu fonts).

The pages: a title page (facility, provider, institution, period and the headline
figures), the hours per day (periods up to :data:`DAILY_UP_TO_DAYS` days) or per month as
bars with the table by resource, then the table by group and, only where the report
carries them (the provider opted in), the top users. Every text is drawn with matplotlib's
mathtext off, so a ``$`` in a name is a dollar sign, never a formula.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.table import Table
from matplotlib.text import Text

#: portrait A4, inches
PAGE_SIZE = (8.27, 11.69)
#: periods up to this many days are charted by day, longer ones by calendar month
DAILY_UP_TO_DAYS = 31
#: table rows on one page; longer tables go on as many pages as they need
ROWS_PER_PAGE = 32
#: longest name shown in a table cell (longer ones end with an ellipsis)
CELL_CHARS = 36
RESOURCE_COLUMNS = (
    ("resource", "Resource"),
    ("kind", "Kind"),
    ("gpu_hours", "GPU-hours"),
    ("core_hours", "Core-hours"),
    ("distinct_users", "Users"),
    ("fits", "Fits"),
    ("utilisation", "Utilisation"),
)
GROUP_COLUMNS = (
    ("resource", "Resource"),
    ("group", "Group"),
    ("gpu_hours", "GPU-hours"),
    ("core_hours", "Core-hours"),
    ("distinct_users", "Users"),
)
USER_COLUMNS = (("user", "User"), ("gpu_hours", "GPU-hours"), ("core_hours", "Core-hours"))


def headline(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline figures as ``(label, value)``: hours delivered, distinct users, fits
    served and utilisation against capacity (accelerator pools by accelerator-hours, CPU
    pools by core-hours)."""
    totals = report["totals"]
    resources = report["resources"]
    accelerators = [r for r in resources if r["kind"] in ("gpu", "fpga")]
    cpus = [r for r in resources if r["kind"] not in ("gpu", "fpga")]
    return [
        ("GPU-hours delivered", _number(totals["gpu_hours"])),
        ("Core-hours delivered", _number(totals["core_hours"])),
        ("Distinct users", f"{totals['distinct_users']:,}"),
        ("Fits served", f"{totals['fits']:,}"),
        ("GPU utilisation", _share(accelerators, "gpu_hours", "capacity_gpu_hours")),
        ("CPU utilisation", _share(cpus, "core_hours", "capacity_core_hours")),
    ]


def _share(rows: list[dict[str, Any]], used: str, capacity: str) -> str:
    cap = sum(r[capacity] for r in rows)
    if not cap:
        return "n/a"
    return f"{100 * sum(r[used] for r in rows) / cap:.1f} %"


def _number(value: float) -> str:
    return f"{value:,.1f}"


def _day(iso: str) -> date:
    return datetime.fromisoformat(iso).astimezone(UTC).date()


def timeline_bars(report: dict[str, Any]) -> tuple[str, list[str], list[float], list[float]]:
    """``(unit, labels, gpu_hours, core_hours)``: the report's daily timeline (already
    summed in SQL per resource and day) added up per day, or per calendar month for
    periods longer than :data:`DAILY_UP_TO_DAYS` days; every day or month of the period
    has a bar, zero where nothing ran."""
    first, last = _day(report["since"]), _day(report["until"])
    daily = (last - first).days <= DAILY_UP_TO_DAYS
    unit = "day" if daily else "month"
    label = (lambda d: d.isoformat()) if daily else (lambda d: d.strftime("%Y-%m"))
    sums: dict[str, list[float]] = {}
    day = first
    while day <= last:
        sums.setdefault(label(day), [0.0, 0.0])
        day += timedelta(days=1)
    for row in report["timeline"]:
        bar = sums.setdefault(label(datetime.fromtimestamp(row["start"], UTC).date()), [0, 0])
        bar[0] += row["gpu_hours"]
        bar[1] += row["core_hours"]
    labels = list(sums)
    return unit, labels, [sums[k][0] for k in labels], [sums[k][1] for k in labels]


def _text(fig: Figure, x: float, y: float, text: str, **style: Any) -> None:
    fig.text(x, y, text, parse_math=False, **style)


def title_page(report: dict[str, Any]) -> Figure:
    """Facility, provider, institution, period and the headline figures."""
    fig = Figure(figsize=PAGE_SIZE)
    _text(fig, 0.08, 0.92, report["facility"], fontsize=14, color="0.35")
    _text(fig, 0.08, 0.86, "Contributions of", fontsize=16)
    _text(fig, 0.08, 0.81, _clip(report["institution"] or report["provider"], 60), fontsize=22)
    _text(fig, 0.08, 0.77, f"Provider: {report['provider']}", fontsize=12)
    period = f"{report['since'][:10]} to {report['until'][:10]} (UTC)"
    _text(fig, 0.08, 0.74, f"Period: {period}", fontsize=12)
    for i, (label, value) in enumerate(headline(report)):
        x, y = 0.08 + 0.44 * (i % 2), 0.62 - 0.12 * (i // 2)
        _text(fig, x, y, value, fontsize=26, weight="bold")
        _text(fig, x, y - 0.03, label, fontsize=12, color="0.3")
    names = (
        "The top users are named with the provider's consent."
        if "top_users" in report
        else "Aggregated figures only: no user is named."
    )
    _text(fig, 0.08, 0.18, names, fontsize=10, color="0.3")
    _text(
        fig,
        0.08,
        0.15,
        f"Generated {report['generated'][:16].replace('T', ' ')} UTC.",
        fontsize=10,
        color="0.3",
    )
    return fig


def hours_page(report: dict[str, Any]) -> Figure:
    """GPU-hours and core-hours per day or month as bars, and the table by resource."""
    unit, labels, gpu, core = timeline_bars(report)
    fig = Figure(figsize=PAGE_SIZE)
    _text(fig, 0.08, 0.95, f"Hours delivered per {unit}", fontsize=16)
    for position, values, name, colour in (
        (0.68, gpu, "GPU-hours", "tab:green"),
        (0.41, core, "Core-hours", "tab:blue"),
    ):
        ax = fig.add_axes((0.1, position, 0.85, 0.2))
        ax.bar(range(len(labels)), values, color=colour)
        ax.set_ylabel(name)
        step = max(1, len(labels) // 12)
        ax.set_xticks(
            range(0, len(labels), step), labels[::step], rotation=45, ha="right", fontsize=7
        )
    _text(fig, 0.08, 0.33, "By resource", fontsize=14)
    _table(fig, (0.05, 0.04, 0.9, 0.26), report["resources"], RESOURCE_COLUMNS)
    return fig


def table_pages(title: str, rows: Sequence[dict[str, Any]], columns) -> list[Figure]:
    """``rows`` as a table under ``title``, :data:`ROWS_PER_PAGE` to a page."""
    pages = []
    for first in range(0, max(len(rows), 1), ROWS_PER_PAGE):
        fig = Figure(figsize=PAGE_SIZE)
        more = " (continued)" if first else ""
        _text(fig, 0.08, 0.95, title + more, fontsize=16)
        chunk = rows[first : first + ROWS_PER_PAGE]
        if chunk:
            height = 0.025 * (len(chunk) + 1)
            _table(fig, (0.05, 0.92 - height, 0.9, height), chunk, columns)
        else:
            _text(fig, 0.08, 0.9, "Nothing ran in this period.", fontsize=12)
        pages.append(fig)
    return pages


def _table(fig: Figure, box, rows: Sequence[dict[str, Any]], columns) -> None:
    ax = fig.add_axes(box)
    ax.axis("off")
    if not rows:
        return
    cells = [[_cell(key, row.get(key)) for key, _ in columns] for row in rows]
    table = ax.table(cellText=cells, colLabels=[title for _, title in columns], loc="upper center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for cell in table.get_celld().values():
        cell.get_text().set_parse_math(False)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "utilisation":
        return f"{100 * value:.1f} %"
    if isinstance(value, float):
        return _number(value)
    return _clip(str(value), CELL_CHARS)


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "\u2026"


def report_figures(report: dict[str, Any]) -> list[Figure]:
    """Every page of the report, in order."""
    pages = [title_page(report), hours_page(report)]
    pages += table_pages("By group", report["groups"], GROUP_COLUMNS)
    if "top_users" in report:
        pages += table_pages("Top users", report["top_users"], USER_COLUMNS)
    return pages


def figure_texts(figures: Sequence[Figure]) -> list[str]:
    """Every text drawn on ``figures`` (titles, labels, tick labels, table cells)."""
    texts = []
    for fig in figures:
        texts += [text.get_text() for text in fig.findobj(Text)]
        for table in fig.findobj(Table):  # a table's cells keep their texts to themselves
            texts += [cell.get_text().get_text() for cell in table.get_celld().values()]
    return texts


def render_pdf(report: dict[str, Any]) -> bytes:
    """The report's pages as one PDF document."""
    out = io.BytesIO()
    period = f"{report['since'][:10]} to {report['until'][:10]}"
    metadata = {
        "Title": f"Contributions of {report['provider']}, {period}",
        "Author": report["facility"],
        "Subject": "Resources delivered to the facility's users (aggregated)",
    }
    with PdfPages(out, metadata=metadata) as pdf:
        for fig in report_figures(report):
            pdf.savefig(fig)
    return out.getvalue()
