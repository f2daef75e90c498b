"""What people and API clients see: error pages, JSON answers, the login and signed-out
pages, their translations and templates.

What lives here: ``pages`` (the single place an error becomes a response, the pages and
JSON responses, security headers) and ``i18n`` (Chinese and English texts). What does not:
deciding which error or page applies.
"""
