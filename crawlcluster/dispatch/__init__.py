"""The dispatcher's parts: what moves due rows from the task table to the broker.

:mod:`~crawlcluster.dispatch.beat` is the celery beat entry that ticks
:mod:`~crawlcluster.dispatch.dispatcher`, which is handed the other parts, none of which
knows it: :mod:`~crawlcluster.dispatch.lease` (one leader among beats),
:mod:`~crawlcluster.dispatch.housekeeping` (timers, deletions, stale rows, the in-flight
recount policy), :mod:`~crawlcluster.dispatch.limits` (host slots, token buckets, in-queue
limits), :mod:`~crawlcluster.dispatch.robots` and :mod:`~crawlcluster.dispatch.robots_gate`
(robots.txt: the hosts' state, and its rules applied to a claim),
:mod:`~crawlcluster.dispatch.claim` (due rows chosen in an open transaction),
:mod:`~crawlcluster.dispatch.pipeline` (the commit thread and the publish thread) and
:mod:`~crawlcluster.dispatch.routing` (fetch or render). The rows they read and
write go through :mod:`crawlcluster.database`.
"""
