"""The search report: one self-contained HTML page per search.

Example:
    >>> from nas.report import write_report
    >>> write_report("my-study", "runs/studies/my-study.journal", "report.html")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.report._html import render_report, write_report

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "nas.report._html": ["render_report", "write_report"],
})
