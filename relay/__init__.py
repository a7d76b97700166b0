"""hookrelay: a webhook relay daemon that runs next to your application."""

__version__ = "0.1.0"
