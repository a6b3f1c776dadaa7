"""The ranking engine: one request in, a validated ranked list out (scoring, generative, hybrid)."""
