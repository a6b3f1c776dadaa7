"""Conversational recommendation: message parsing, titles, the chat session and its SQLite store."""
