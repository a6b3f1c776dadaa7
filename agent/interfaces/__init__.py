"""How people reach the agent: the CLI, the terminal chat and the HTTP server with its web page."""
