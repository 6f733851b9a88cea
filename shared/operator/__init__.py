"""The operator's side: what `manage.py` does (ops), long polling without a public URL."""
