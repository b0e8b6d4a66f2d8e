"""The browser tier: one headless Chromium per render worker process.

``renderer.py`` owns the browser (launch, recycle, replace a crashed or hung one, close
without leftovers) and keeps a bounded number of pages in flight; ``page.py`` renders one
page step by step (pyppeteer is imported only there, so only render workers need it);
``result.py`` holds the types the two share; ``chromium.py`` starts the Chromium process
in a group of its own; ``proctree.py`` measures and kills its process tree. The import
order is one-way: renderer → page → result.
"""
