"""chunkq's user interfaces: the `chunkq` command and the Textual dashboard.

Importing this package imports nothing heavy: headless commands (cron, worker)
must never load Textual, so the dashboard lives in modules loaded on demand.
"""
