"""WeCom (企业微信): its server API client, errors and the shared access token.

``client`` calls WeCom's ``/cgi-bin/`` API for one self-built app (who a code belongs to,
a member, the departments) with its quirks, and maps every errcode to one exception class;
``tokens`` keeps the app's access token in the state store for every worker and replica,
fetched by one caller at a time. The ``IdentityProvider`` built on them (browser flows,
sign-in, revalidation) belongs beside them; login state, cookies and sessions do not
(``gateway.login``, ``gateway.auth``).
"""

from gateway.providers.wecom import client
from gateway.providers.wecom.client import *  # noqa: F403 - the package's face is the client's
from gateway.providers.wecom.tokens import AccessTokens

__all__ = [*client.__all__, "AccessTokens"]  # noqa: PLE0604
