"""Routing: which stage (fetch or the browser tier's render) each claimed row is sent to."""

from __future__ import annotations

from typing import Any

from crawlcluster.db import get_engine
from crawlcluster.rendering import RenderHostMemory
from crawlcluster.stages import FETCH, RENDER


class Router:
    """Sends render rows to the browser tier and the rest to fetch. A ``render="auto"`` row
    goes to render once its host, callback and URL shape are known to need a browser (learned
    by the parse stage in render_hosts, read through :class:`RenderHostMemory`)."""

    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url
        self._render_hosts: RenderHostMemory | None = None

    def route(self, project: str, row: dict[str, Any]) -> str:
        """The task (and so the queue) a claimed row of ``project`` is sent to."""
        fetch = row.get("fetch")
        render = fetch.get("render") if fetch else None
        if not render:
            return FETCH.task
        if render is True:
            return RENDER.task
        if render == "auto" and self._render_host_memory().needs_render(project, row["url"],
                                                                         row.get("callback") or "parse"):
            return RENDER.task
        return FETCH.task

    def by_task(self, project: str, rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
        """``rows`` grouped by the task they are sent to, in the order each task first appears."""
        by_task: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_task.setdefault(self.route(project, row), []).append(row)
        return list(by_task.items())

    def _render_host_memory(self) -> RenderHostMemory:
        # created on first use: most dispatchers never see an "auto" row
        if self._render_hosts is None:
            self._render_hosts = RenderHostMemory(get_engine(self.database_url))
        return self._render_hosts
