"""What the HTTP server needs besides the graph: the incident index, run management, the page."""
