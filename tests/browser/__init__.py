"""Tests that drive a real headless Chromium (Debian's ``chromium`` and ``chromedriver``,
installed by ``make test``) through the gateway's pages and the demo."""
