"""A static HTML explorer of a results folder (`mrb report --format html --output DIR`).

Pages: the leaderboard (the report's tables, sortable, and its charts inline), one per task (the
distribution of the per-query gain, the largest wins and losses, the paired tests) and one per shown
query (the query and, side by side, the first stage's top 10 and each model's, with thumbnails,
relevance labels, scores and rank movement). No server and no network: the site opens from disk.
Every text that comes from data is escaped.
"""

from mrb.html.site import SiteStats, write_site

__all__ = ["SiteStats", "write_site"]
