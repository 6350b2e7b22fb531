"""The WeChat protocol: the HTTP client, errcode classification and the simulator."""
