"""The human check: a self-contained HTML review report of an ``aiflat run`` folder.

`write_report` reads the products of an output folder (``median.fits``,
``mask.fits``, ``flat.fits``, ``dust.ecsv``, ``aiflat_run.json``, ``drift.png``)
and writes one HTML file that opens in any browser without a server or a
network: the median with the mask layers (zoom, pan, toggles), a gallery of
every shadow (REVIEW ones first) with accept/reject buttons, "add a shadow"
by clicking on the image, and an Export button that saves ``review.reg`` (a
DS9 region file for ``--exclude-regions``/``--include-regions``) and
``review.json`` (the decisions).
"""

from ._build import REPORT_NAME, collect_report, write_report

__all__ = ["write_report", "collect_report", "REPORT_NAME"]
