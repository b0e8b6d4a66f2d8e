"""render: headless-browser rendering is not part of this release yet.

Rows that ask for ``render=True`` are routed here and end as failed with an error that
says so, instead of waiting forever in a queue no worker serves.
"""

from __future__ import annotations

from typing import Any

from crawlcluster.app import app
from crawlcluster.schema import FAILED

NOT_YET = ("rendering (render=True) is not available in this release yet; "
           "fetch the page without render or wait for the browser tier")


@app.task(name="crawlcluster.render", acks_late=True, ignore_result=True)
def render(message: dict[str, Any]) -> dict[str, int]:
    pages = [{"id": t["id"], "url": t["url"], "status": FAILED, "error": NOT_YET} for t in message["tasks"]]
    app.send_task("crawlcluster.store", args=[{"project": message["project"], "pages": pages}])
    return {"failed": len(pages)}
