"""A Streamlit app with no login of its own, for ``tests/browser/test_streamlit.py``.

Run it as a user would: ``streamlit run tests/helpers/streamlit_app.py``. Everything it
knows of the user comes from the gateway, in the headers of the WebSocket handshake
(``/_stcore/stream``) that Streamlit exposes as ``st.context.headers``; with
``server.trustedUserHeaders`` mapping ``X-WeChat-OpenID`` to ``openid``, the openid is also
in ``st.user``. Typing into the text box and pressing Enter re-runs the script, which
answers with the nickname and what was typed. A file uploaded goes up in a ``PUT`` that
Streamlit checks against its XSRF cookie; the app says how big it was.

Each output sits in a keyed container (CSS class ``st-key-<key>``) for the test to find.
"""

from __future__ import annotations

from urllib.parse import unquote

import streamlit as st

st.set_page_config(page_title="Streamlit behind wechat-gateway")
headers = st.context.headers
# The gateway percent-encodes the nickname (UTF-8) so that no value can break a header line.
nickname = unquote(headers.get("X-WeChat-Nickname", "stranger"))

st.title("Streamlit behind wechat-gateway")
with st.container(key="greeting"):
    st.text(f"Signed in as {nickname}")
with st.container(key="openid"):
    st.text(f"openid: {headers.get('X-WeChat-OpenID', 'absent')}")
with st.container(key="user"):
    st.text(f"st.user openid: {st.user.get('openid', 'absent')}")

typed = st.text_input("Type something and press Enter", key="typed")
if typed:
    with st.container(key="reply"):
        st.text(f"Hello {nickname}, you typed: {typed}")

uploaded = st.file_uploader("Upload a file", key="upload")
if uploaded is not None:
    with st.container(key="uploaded"):
        st.text(f"{nickname} uploaded {uploaded.name}: {uploaded.size} bytes")
