"""The inference process: an OpenAI-compatible API over the served versions
(``python -m gunicorn inference.wsgi``; settings ``inference.settings``)."""
