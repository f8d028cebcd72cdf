"""The dashboard's screens: jobs (home), job detail, and the dialogs (enqueue, export, confirm, help).

Screens compose widgets and decide what to read and when; they reach the app only
through ``protocol.Dashboard`` and never import ``app.py``.
"""
