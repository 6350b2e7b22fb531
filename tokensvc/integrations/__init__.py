"""Adapters that point existing WeChat SDKs at tokensvc's WeChat-shaped facade."""
