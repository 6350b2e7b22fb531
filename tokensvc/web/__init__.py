"""The HTTP server: app factory, authentication, API routes."""
