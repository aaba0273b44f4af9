"""HTTP handlers: each parses the request, calls one domain function and renders the result."""
