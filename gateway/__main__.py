"""``python -m gateway``: the same program as ``wechat-gateway``."""

import sys

from gateway.cli import main

sys.exit(main())
