"""wechat-gateway: WeChat QR-code login in front of unmodified web apps."""

__version__ = "0.1.0"
