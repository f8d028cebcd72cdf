"""The Textual dashboard: loaded only by `chunkq tui` and `chunkq demo`, never by headless commands."""
