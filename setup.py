"""Packaging for wechat-gateway: ``pip install .`` gives the ``wechat-gateway`` command."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="wechat-gateway",
    version="0.1.0",
    description="WeChat QR-code login in front of unmodified web apps: an auth gateway.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["gateway", "gateway.*"]),
    package_data={
        "gateway": ["py.typed"],
        "gateway.web": ["templates/*.html"],
        "gateway.simulator": ["templates/*.html"],
    },
    install_requires=[
        "Werkzeug>=3.0,<4",
        "gunicorn[gevent]>=26.2,<28",
        "gevent>=24.10,<27",
        "packaging>=23",
        "requests>=2.31,<3",
        "urllib3>=2.2,<3",
        "cachetools>=5.3,<9",
        "cryptography>=42,<50",
        # Signs X-WeChat-Assertion (ES256); the keys themselves are cryptography's.
        "PyJWT[crypto]>=2.8,<3",
        "PyYAML>=6.0,<7",
        "redis>=5,<7",
        "segno>=1.6,<2",
        # The demo's sample app serves its live WebSocket panel with it.
        "websockets>=13,<17",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "hypothesis>=6.100,<7",
            "selenium>=4.20,<5",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
            "types-requests",
            "types-cachetools",
            # A real application with a WebSocket, run behind the gateway in Chromium.
            "streamlit>=1.67,<2",
            # A real app with a reverse-proxy login mode, run behind the gateway (docs/recipes).
            "Radicale>=3.5,<4",
        ],
    },
    entry_points={"console_scripts": ["wechat-gateway = gateway.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
    ],
)
