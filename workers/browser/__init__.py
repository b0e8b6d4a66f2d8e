"""The browser tier: one headless Chromium per render worker process.

``renderer.py`` owns the browser (launch, recycle, replace a crashed or hung one, close
without leftovers) and keeps a bounded number of pages in flight; ``page.py`` renders one
page step by step in a browser context of its own (pyppeteer is imported only there and
in ``devtools_pipe.py``, so only render workers need it); ``result.py`` holds the types
the two share; ``handle.py`` starts and connects one browser; ``chromium.py`` starts the
Chromium process (its environment, user, sandbox and DevTools pipes) in a group of its
own; ``devtools_pipe.py`` is pyppeteer's connection over those pipes; ``guard_proxy.py``
is the proxy every browser request goes through, asking the address guard;
``proctree.py`` measures and kills its process tree. The import order is one-way:
renderer → handle/page → chromium/guard_proxy/result.
"""
