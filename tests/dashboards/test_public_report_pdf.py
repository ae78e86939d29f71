"""The public report's PDF builder (afhub.services.facility_api.public_report_pdf) without a
server: headline figures, bars per day or month, pages, and no user names unless the
provider opted in (checked in the figures' texts and in the PDF's extracted text)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from pypdf import PdfReader

from afhub.services.facility_api.public_report_pdf import (
    ROWS_PER_PAGE,
    figure_texts,
    headline,
    render_pdf,
    report_figures,
    timeline_bars,
)

SECRET = "zz_secret_user"


def _ts(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


def _report(since: str = "2026-11-05", until: str = "2026-12-05", **extra) -> dict:
    return {
        "provider": "beta",
        "institution": "Beta $Lab$ <i>",
        "facility": "Test Facility",
        "since": f"{since}T00:00:00+00:00",
        "until": f"{until}T00:00:00+00:00",
        "generated": f"{until}T00:00:00+00:00",
        "totals": {"gpu_hours": 1234.5, "core_hours": 48.0, "distinct_users": 7, "fits": 3},
        "resources": [
            {
                "resource": "beta-gpu",
                "kind": "gpu",
                "gpu_hours": 1234.5,
                "core_hours": 0.0,
                "distinct_users": 5,
                "fits": 3,
                "capacity_gpu_hours": 5000.0,
                "capacity_core_hours": 0.0,
                "utilisation": 0.2469,
            },
            {
                "resource": "beta-cpu",
                "kind": "cpu",
                "gpu_hours": 0.0,
                "core_hours": 48.0,
                "distinct_users": 3,
                "fits": 0,
                "capacity_gpu_hours": 0.0,
                "capacity_core_hours": 480.0,
                "utilisation": 0.1,
            },
        ],
        "groups": [
            {"resource": "beta-cpu", "group": "atlas", "gpu_hours": 0.0, "core_hours": 48.0}
        ],
        "timeline": [
            {
                "resource": "beta-gpu",
                "start": _ts("2026-11-10"),
                "gpu_hours": 1000.0,
                "core_hours": 0.0,
            },
            {
                "resource": "beta-gpu",
                "start": _ts("2026-12-01"),
                "gpu_hours": 234.5,
                "core_hours": 0.0,
            },
            {
                "resource": "beta-cpu",
                "start": _ts("2026-12-01"),
                "gpu_hours": 0.0,
                "core_hours": 48.0,
            },
        ],
        **extra,
    }


def _pdf_text(pdf: bytes) -> tuple[int, str]:
    reader = PdfReader(io.BytesIO(pdf))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def test_headline_figures():
    assert dict(headline(_report())) == {
        "GPU-hours delivered": "1,234.5",
        "Core-hours delivered": "48.0",
        "Distinct users": "7",
        "Fits served": "3",
        "GPU utilisation": "24.7 %",  # 1234.5 of 5000 GPU-hours
        "CPU utilisation": "10.0 %",  # 48 of 480 core-hours
    }
    no_gpu = _report(resources=_report()["resources"][1:])
    assert dict(headline(no_gpu))["GPU utilisation"] == "n/a"


def test_bars_per_day_for_a_month_and_per_month_for_a_year():
    unit, labels, gpu, core = timeline_bars(_report())
    assert unit == "day"
    assert (labels[0], labels[-1], len(labels)) == ("2026-11-05", "2026-12-05", 31)
    assert gpu[labels.index("2026-11-10")] == 1000.0
    assert core[labels.index("2026-12-01")] == 48.0
    assert sum(gpu) == 1234.5
    unit, labels, gpu, core = timeline_bars(_report(since="2025-12-05"))
    assert unit == "month"
    assert labels == ["2025-12", *(f"2026-{m:02d}" for m in range(1, 13))]
    assert gpu[-2:] == [1000.0, 234.5]
    assert core[-1] == 48.0


def test_pdf_has_the_headline_and_no_user_names_unless_opted_in():
    top = [{"user": SECRET, "gpu_hours": 1.0, "core_hours": 2.0}]
    aggregate = _report(extra_field_ignored=top)
    pdf = render_pdf(aggregate)
    assert pdf.startswith(b"%PDF")
    pages, text = _pdf_text(pdf)
    assert pages == 3  # title, hours, groups
    for figure in ("Test Facility", "Beta $Lab$ <i>", "1,234.5", "48.0", "24.7 %", "beta-cpu"):
        assert figure in text
    assert "2026-11-05 to 2026-12-05" in text
    assert "no user is named" in text
    assert SECRET not in text
    assert all(SECRET not in t for t in figure_texts(report_figures(aggregate)))

    named = _report(top_users=top)
    assert any(SECRET in t for t in figure_texts(report_figures(named)))
    pages, text = _pdf_text(render_pdf(named))
    assert pages == 4
    assert SECRET in text


@pytest.mark.parametrize(("groups", "pages"), [(0, 3), (ROWS_PER_PAGE + 1, 4)])
def test_long_tables_go_on_more_pages(groups, pages):
    rows = [
        {"resource": "beta-cpu", "group": f"g{i}", "gpu_hours": 0.0, "core_hours": 1.0}
        for i in range(groups)
    ]
    figures = report_figures(_report(groups=rows))
    assert len(figures) == pages
    texts = figure_texts(figures)
    assert ("Nothing ran in this period." in texts) == (groups == 0)
    assert all(f"g{i}" in texts for i in range(groups))
