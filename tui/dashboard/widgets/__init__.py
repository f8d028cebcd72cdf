"""The dashboard's widgets: each owns its state (reactive attributes, drawn from them only) and its messages.

Pure helpers sit next to the widget they serve (``job_rows``/``job_page`` for the jobs
table, ``keyed_table`` for every keyed table) and are unit-tested without an app.
"""
