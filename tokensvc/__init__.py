"""tokensvc: the one server that holds your WeChat AppSecrets and keeps every access_token alive."""

__version__ = "0.1.0"
