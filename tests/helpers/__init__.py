"""What the test lanes share: the gateway as a process (``support``), HTTP clients that
keep cookies like a browser (``e2e.HttpBrowser`` on requests, ``raw_e2e.RawBrowser`` on raw
sockets), the apps behind the gateway (``upstreams``), the WeChat set-up of the end-to-end
login tests (``wechat_e2e``), headless Chromium (``browser.ChromiumBrowser``) and the CLI
tests' config files (``cli``). No tests live here."""
